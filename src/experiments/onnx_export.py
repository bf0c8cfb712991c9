"""ONNX export of a fine-tuned model for serving (``export.onnx=true``: ``<run>/model.onnx``).

Why from the exported folder: ``model/`` is what a user serves (LoRA already merged, the head and its
``id2label`` in ``config.json``), so the ONNX graph is made from exactly that folder, with torch's exporter
(``torch.onnx.export(dynamo=True)``), batch and sequence axes dynamic. Inputs are the tokenizer's
``model_input_names`` (``input_ids``, ``attention_mask`` and, for BERT, ``token_type_ids``) as int64;
the output is ``logits`` (classification heads) or ``last_hidden_state`` (the ranking encoder).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from experiments.errors import ExperimentsError

HEADS = ("token_classification", "sequence_classification", "encoder")


def export_onnx(model_dir: str | Path, out_path: str | Path, head: str, opset: int = 18) -> Path:
    """Write ``out_path`` (written to a temporary name and renamed, so a crash leaves no partial file).

    Args:
        model_dir: a ``save_pretrained`` folder with config, weights and tokenizer.
        out_path: the ``.onnx`` file to write.
        head: ``token_classification`` (logits ``[batch, seq, labels]``), ``sequence_classification``
            (logits ``[batch, labels]``) or ``encoder`` (``last_hidden_state`` ``[batch, seq, hidden]``).
        opset: ONNX opset version.

    Raises:
        ExperimentsError: an unknown head, or the exporter failed (its message included).
    """
    import torch
    from torch.export import Dim
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    if head not in HEADS:
        raise ExperimentsError(f"ONNX export: unknown head {head!r}; expected one of {HEADS}")
    auto = {"token_classification": AutoModelForTokenClassification,
            "sequence_classification": AutoModelForSequenceClassification, "encoder": AutoModel}[head]
    model = auto.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    example = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True, return_tensors="pt")
    inputs = {n: example[n] for n in names}
    batch, seq = Dim("batch"), Dim("sequence")
    output = "last_hidden_state" if head == "encoder" else "logits"

    class Wrapped(torch.nn.Module):
        """Returns the one tensor served (not a ModelOutput), in a fixed argument order."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return getattr(self.inner(**kwargs), output)

    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notes of the op registry
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped(model), (), str(tmp), kwargs=inputs, input_names=names, output_names=[output],
                              dynamic_shapes={n: {0: batch, 1: seq} for n in names}, opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        quiet.setLevel(level)
        os.replace(tmp, out_path)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types
        tmp.unlink(missing_ok=True)
        raise ExperimentsError(f"ONNX export of {model_dir} failed: {type(err).__name__}: {str(err)[:500]}") from err
    return out_path
