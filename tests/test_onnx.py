"""ONNX export: for every head, ONNX Runtime's outputs match PyTorch's within 1e-4 on inputs of another
batch size and length than the export's example (dynamic axes), padding included; export.onnx=true through
the CLI writes model.onnx beside model/."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.onnx_export import export_onnx


def _save(tiny_encoder_dir, tmp_path, head):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    from conftest import make_tokenizer

    auto = {"token_classification": AutoModelForTokenClassification,
            "sequence_classification": AutoModelForSequenceClassification, "encoder": AutoModel}[head]
    kwargs = {} if head == "encoder" else {"num_labels": 4}
    torch.manual_seed(0)
    model = auto.from_pretrained(tiny_encoder_dir, **kwargs).eval()
    folder = tmp_path / head
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("head", ["token_classification", "sequence_classification", "encoder"])
def test_onnx_runtime_matches_pytorch(tiny_encoder_dir, tmp_path, head):
    import onnxruntime as ort

    model, folder = _save(tiny_encoder_dir, tmp_path, head)
    path = export_onnx(folder, tmp_path / f"{head}.onnx", head=head)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert sorted(names) == ["attention_mask", "input_ids", "token_type_ids"]
    g = torch.Generator().manual_seed(1)
    for batch, length in ((1, 5), (7, 23)):
        ids = torch.randint(5, 60, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, length - 2:] = 0  # padding
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        (got,) = session.run(None, {k: v.numpy() for k, v in feed.items()})
        with torch.no_grad():
            out = model(**feed)
        ref = (out.last_hidden_state if head == "encoder" else out.logits).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4


def test_cli_export_onnx(run_cli, tmp_path):
    from test_cli import data_overrides, write_data

    _, run_dir = run_cli("debug=limit", "export.onnx=true", *data_overrides(write_data(tmp_path / "data")))
    assert (run_dir / "model.onnx").stat().st_size > 0 and (run_dir / "model" / "config.json").is_file()
    assert not list(run_dir.glob(".*.tmp"))
