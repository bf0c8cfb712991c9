"""The dependency set installs and imports together (numpy<2 for W&B's sweeps, datasets, pyarrow, setfit,
ONNX, optuna with database storage), and a Hugging Face DatasetDict saved to disk trains end to end."""

from __future__ import annotations

import json

import pytest


def test_the_whole_dependency_set_imports_together():
    import datasets
    import numpy
    import onnxruntime  # noqa: F401
    import optuna
    import pyarrow
    import setfit  # noqa: F401
    import sweeps  # noqa: F401
    import transformers  # noqa: F401

    assert int(numpy.__version__.split(".")[0]) < 2  # sweeps' pin
    assert int(pyarrow.__version__.split(".")[0]) < 26
    assert datasets.__version__
    study = optuna.create_study(storage="sqlite:///:memory:")  # database storage works (SQLAlchemy 1.x)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(study.trials) == 1


@pytest.mark.parametrize("splits", [("train", "test"), ("train",), ("train", "validation", "test")])
def test_a_saved_dataset_dict_trains_and_missing_splits_are_carved(tmp_path, tiny_encoder_dir, splits):
    import datasets

    from cli_helpers import run_cli

    words = ["the", "bank", "of", "america", "new", "york", "john", "smith", "paris", "google"]
    rows = {"text": [f"{w} refund" for w in words] + [f"{w} cancel order" for w in words],
            "label": [0] * len(words) + [1] * len(words)}
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["refund", "cancel"])})
    ds = datasets.Dataset.from_dict(rows, features=features)
    folder = tmp_path / "saved"
    datasets.DatasetDict({name: ds for name in splits}).save_to_disk(str(folder))
    out = tmp_path / "out"
    metrics = run_cli(["task=text_classification", f"model.name_or_path={tiny_encoder_dir}",
                       f"data.train_file={folder}", "data.text_column=text", "data.label_column=label",
                       "debug=limit", "data.batch_size=4"], out)
    assert "test/accuracy" in metrics
    config = json.loads((out / "model" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["cancel", "refund"]  # ClassLabel names, not ids
    ids = json.loads((out / "split_ids.json").read_text()) if (out / "split_ids.json").exists() else {}
    if "validation" not in splits:
        assert "validation" in ids and len(ids["validation"]) >= 1
