"""PET-style cloze classification (Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text
Classification and Natural Language Inference", EACL): the input becomes a template with a mask slot
(``"{text} It was {mask}."``) and each label a verbalizer word; the class scores are the masked-LM logits
of the label words at the mask position, trained with cross-entropy. With few examples this reuses what
the masked-LM head already knows instead of training a new classifier from scratch.

Applied where the model is built (``models.build.build_model``): the masked-LM model is wrapped in
:class:`ClozeClassifier`, whose ``logits`` are ``[batch, num_labels]`` like a sequence-classification
head, so the sentence-classification module, its metrics and its outputs are unchanged. The datamodule
fills the template (``data.template``). An encoder without a masked-LM head (the offline all-MiniLM-L6-v2)
is refused: PET needs that head's knowledge, and a random one would make it a worse classifier.
Export: ``model/`` is the fine-tuned masked-LM model (``AutoModelForMaskedLM``) plus ``pet.json`` with
the template and the verbalizer token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from experiments.errors import ConfigError, DataError

__all__ = ["PETConfig", "ClozeClassifier", "verbalizer_ids"]


@dataclass
class PETConfig:
    """The ``finetune.adapter`` of ``finetune=pet``.

    Attributes:
        verbalizer: label -> word scored at the mask (``None``: each label is its own word). Each word must be
            one token of the tokenizer.
        template: the input template (``data.template``, with ``{text}`` and ``{mask}``), saved in ``pet.json``.
    """

    verbalizer: dict[str, str] | None = field(default=None)
    template: str = "{text} It was {mask}."


def verbalizer_ids(tokenizer: Any, labels: list[str], verbalizer: dict[str, str] | None) -> list[int]:
    """The token id of each label's word.

    Raises:
        ConfigError: a label without a word, or a word that is not exactly one known token.
    """
    words = verbalizer or {label: label for label in labels}
    ids = []
    for label in labels:
        if label not in words:
            raise ConfigError(f"finetune.adapter.verbalizer has no word for label {label!r}; labels: {labels}")
        pieces = tokenizer(words[label], add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            raise ConfigError(f"verbalizer word {words[label]!r} (label {label!r}) is {len(pieces)} tokens "
                              f"{tokenizer.convert_ids_to_tokens(pieces)}; PET needs one known token per label")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"verbalizer words must differ; got {words}")
    return ids


class ClozeClassifier(nn.Module):
    """A masked-LM model read as a classifier: ``logits[b, c]`` = the MLM logit of label ``c``'s word at
    the mask of row ``b``.

    Args:
        mlm: an ``AutoModelForMaskedLM`` model.
        mask_token_id: the tokenizer's mask id.
        label_token_ids: one vocabulary id per label (:func:`verbalizer_ids`).
        template: the input template (saved with the export).

    Raises (forward):
        DataError: a row without exactly one mask token (the template's mask was cut by truncation).
    """

    def __init__(self, mlm: nn.Module, mask_token_id: int, label_token_ids: list[int], template: str):
        super().__init__()
        self.mlm = mlm
        self.mask_token_id = int(mask_token_id)
        self.template = template
        self.register_buffer("label_token_ids", torch.tensor(label_token_ids, dtype=torch.long), persistent=False)

    @property
    def config(self) -> Any:
        return self.mlm.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        out = self.mlm(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        is_mask = input_ids == self.mask_token_id  # [B, T]
        counts = is_mask.sum(1)
        if not bool((counts == 1).all()):
            row = int(torch.nonzero(counts != 1)[0])
            raise DataError("PET input", None, f"batch row {row} has {int(counts[row])} mask tokens; expected "
                            "exactly one (put {mask} before {text} in data.template, or raise data.max_length)")
        at_mask = out[is_mask]  # [B, V], one row per example in order
        logits = at_mask[:, self.label_token_ids]  # [B, C]
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The masked-LM model (``AutoModelForMaskedLM`` loads it) and ``pet.json`` beside it."""
        self.mlm.save_pretrained(folder, **kwargs)
        (Path(folder) / "pet.json").write_text(json.dumps(
            {"template": self.template, "mask_token_id": self.mask_token_id,
             "label_token_ids": self.label_token_ids.tolist(), "id2label": self.mlm.config.id2label}, indent=1))
