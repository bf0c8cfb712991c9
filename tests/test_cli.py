"""End-to-end runs of the entry point on a tiny random BERT: train, test, export, predict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from experiments.errors import ConfigError, DataError, ModelLoadError

TRAIN = """-DOCSTART- O

john B-PER
smith I-PER
lives O
in O
paris B-LOC
. O

apple B-ORG
shares O
rose O

the O
bank O
of O
america B-ORG
"""
TEST = """john B-PER
works O
at O
google B-ORG

paris B-LOC
rose O
"""


def write_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": folder / "train.txt", "validation": folder / "valid.txt", "test": folder / "test.txt"}
    files["train"].write_text(TRAIN)
    files["validation"].write_text(TEST)
    files["test"].write_text(TEST)
    return files


def data_overrides(files: dict[str, Path]) -> list[str]:
    return [f"data.{k}_file={v}" for k, v in files.items()] + ["data.batch_size=2"]


def test_fast_dev_run(run_cli, tmp_path):
    metrics, run_dir = run_cli("debug=fast_dev_run", *data_overrides(write_data(tmp_path / "data")))
    assert 0.0 <= metrics["test/f1"] <= 1.0
    assert (run_dir / "metrics.json").exists()
    assert (run_dir / "config.yaml").exists()
    # A check run writes no checkpoint (Lightning 2.6's ModelCheckpoint.on_train_end would write last.ckpt).
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


def test_train_writes_reports_export_and_predict(run_cli, tmp_path, tiny_encoder_dir):
    files = write_data(tmp_path / "data")
    metrics, run_dir = run_cli("debug=limit", "trainer.max_epochs=2", *data_overrides(files))

    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/f1", "test/precision", "test/recall", "test/f1_PER", "test/f1_ORG", "test/f1_LOC"):
        assert key in saved
    report = (run_dir / "classification_report.txt").read_text()
    assert "micro avg" in report and "PER" in report
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["words"] for r in rows] == [["john", "works", "at", "google"], ["paris", "rose"]]
    assert rows[0]["gold"] == ["B-PER", "O", "O", "B-ORG"]
    assert all(len(r["tags"]) == len(r["words"]) for r in rows)
    assert list((run_dir / "checkpoints").glob("*.ckpt"))

    # The export loads in plain transformers with the training file's labels.
    from transformers import AutoConfig, pipeline

    config = AutoConfig.from_pretrained(run_dir / "model")
    assert set(config.label2id) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    ner = pipeline("token-classification", model=str(run_dir / "model"))
    assert isinstance(ner("john lives in paris"), list)

    # Predict mode from the Lightning checkpoint on plain text, one sentence per line.
    text = tmp_path / "input.txt"
    text.write_text("john works at google\n\nparis rose\n")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run_cli("mode=predict", f"ckpt_path={ckpt}", f"data.predict_file={text}", "data.train_file=null",
            "data.validation_file=null", "data.test_file=null", run_dir=tmp_path / "pred")
    preds = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert [p["words"] for p in preds] == [["john", "works", "at", "google"], ["paris", "rose"]]
    assert all(set(p["tags"]) <= set(config.label2id) for p in preds)


def test_relative_data_paths_resolve_against_launch_dir(run_cli, tmp_path, monkeypatch):
    write_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    metrics, _ = run_cli("debug=fast_dev_run", "data.train_file=data/train.txt",
                         "data.validation_file=data/valid.txt", "data.test_file=data/test.txt")
    assert "test/f1" in metrics


def test_unseen_test_tag_is_an_error_naming_file_and_line(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    files["test"].write_text("john B-PER\nparis B-GPE\n")
    with pytest.raises(DataError) as err:
        run_cli("debug=fast_dev_run", *data_overrides(files))
    assert f"{files['test']}:2" in str(err.value) and "B-GPE" in str(err.value)


def test_offline_hub_model_fails_fast_with_ways_out(run_cli, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        run_cli("debug=fast_dev_run", "model.name_or_path=no-such-org/no-such-model",
                *data_overrides(write_data(tmp_path / "data")))
    assert time.perf_counter() - start < 10
    assert "model=minilm" in str(err.value) and "model.name_or_path=/local/folder" in str(err.value)


def test_lora_targets_the_model_lacks_fail_before_training(tiny_encoder_dir):
    from peft import LoraConfig

    from experiments.models.build import build_model

    with pytest.raises(ConfigError, match="q_proj"):
        build_model(str(tiny_encoder_dir), head="token_classification", labels=["O", "B-X", "I-X"],
                    adapter=LoraConfig(r=2, target_modules=["q_proj"]))
