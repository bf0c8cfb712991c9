"""W&B tracking: an offline run on the tiny model, read back from the run's ``.wandb`` transaction log.

wandb 0.31 writes offline runs as ``wandb/offline-run-<time>-<id>/run-<id>.wandb`` (what ``wandb sync``
uploads) and no longer ships a Python reader for it; the file is LevelDB's log format (32 KiB blocks of
checksummed, typed chunks) behind a 7-byte ``:W&B`` header, each record a ``wandb.proto`` ``Record``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from conftest import compose_config
from experiments.tasks.classification.metrics import class_table
from experiments.tasks.ner.metrics import per_type_figure, protocol_table
from experiments.tracking import metric_goal, objective
from test_cli import data_overrides, write_data

BLOCK = 32 * 1024


def wandb_records(path: Path):
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer too short for a chunk header: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # still being written
            break
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def read_offline_run(run_dir: Path, timeout: float = 60.0) -> dict:
    """Run info, config, final summary, history keys and artifacts of the one offline run in ``run_dir``.

    ``run.finish()`` can return before wandb-core has written the last records, so the file is read
    again until it holds the run's exit record.
    """
    [folder] = list((run_dir / "wandb").glob("offline-run-*"))
    [log_file] = list(folder.glob("run-*.wandb"))
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(log_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = {"folder": folder, "config": {}, "summary": {}, "history_keys": set(), "artifacts": []}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(
                name=rec.run.display_name,
                group=rec.run.run_group,
                tags=list(rec.run.tags),
                project=rec.run.project,
            )
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history_keys"] |= {"/".join(i.nested_key) or i.key for i in rec.history.item}
        elif kind == "artifact":
            out["artifacts"].append((rec.artifact.name, rec.artifact.type))
    return out


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = tmp_path / var.lower()
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_offline_run_logs_config_metrics_report_and_artifacts(wandb_env, tmp_path, tiny_encoder_dir):
    from experiments.__main__ import run

    files = write_data(tmp_path / "data")
    run_dir = tmp_path / "run"
    cfg = compose_config(
        [
            "experiment=ner_conll2003_minilm",
            f"model.name_or_path={tiny_encoder_dir}",
            "trainer.precision=32",
            "logger=wandb",
            "logger.wandb.mode=offline",
            "logger.wandb.log_model=true",
            "callbacks.tracking.log_export=true",
            "~callbacks.progress_bar",
            "debug=limit",
            "trainer.max_epochs=2",
            "tags=[tiny,test]",
            *data_overrides(files),
        ],
        output_dir=run_dir,
    )
    metrics = run(cfg)

    logged = read_offline_run(run_dir)
    # Run name, group (the experiment= choice) and tags come from the config.
    assert logged["name"] == "ner-full" and logged["group"] == "ner_conll2003_minilm"
    assert logged["tags"] == ["tiny", "test"] and logged["project"] == "experiments"
    # The resolved config, as a plain nested dict.
    config = logged["config"]
    assert config["optimizer"]["lr"] == pytest.approx(1e-4)
    assert config["model"]["name_or_path"] == str(tiny_encoder_dir)
    assert config["data"]["train_file"] == str(files["train"]) and config["trainer"]["max_epochs"] == 2
    assert config["logger"]["wandb"]["mode"] == "offline"
    # Metrics under train/, val/ and test/; the final test scores are the run's summary.
    for key in ("test/f1", "test/precision", "test/recall", "test/f1_PER"):
        assert logged["summary"][key] == pytest.approx(metrics[key])
    assert {"train/loss_step", "val/f1", "test/f1"} <= logged["history_keys"]
    # Report table and per-type F1 image at test end.
    assert any(k.startswith("test/classification_report/") for k in logged["history_keys"])
    assert any(k.startswith("test/f1_per_type/") for k in logged["history_keys"])
    assert list((logged["folder"] / "files" / "media" / "table").rglob("*.table.json"))
    # Best checkpoint (Lightning's log_model) and the exported model as artifacts.
    names = [name for name, kind in logged["artifacts"] if kind == "model"]
    assert any(n.startswith("model-") for n in names) and "ner-full-export" in names
    # The validation history the sweeps read is kept whatever the logger.
    history = json.loads((run_dir / "val_history.json").read_text())["history"]
    assert len(history) == 2 and all("val/f1" in row for row in history)


def test_report_tables_come_from_the_structured_results():
    import torch

    from experiments.tasks.classification.metrics import single_label_scores
    from experiments.tasks.ner.metrics import entity_scores

    # Confusion matrix, rows gold: a (2: both right), b (2: one right, one predicted a). By hand: a P 2/3 R 1,
    # b P 1 R 1/2.
    cm = torch.tensor([[2, 0], [1, 1]])
    columns, rows = class_table(["a", "b"], single_label_scores(cm))
    assert columns == ["label", "precision", "recall", "f1-score", "support"]
    assert rows[0][:2] == ["a", pytest.approx(2 / 3)] and rows[0][2:] == [1.0, pytest.approx(0.8), 2]
    assert rows[1] == ["b", 1.0, 0.5, pytest.approx(2 / 3), 2]
    assert [r[0] for r in rows[2:]] == ["macro avg", "weighted avg"]
    columns, rows = protocol_table(entity_scores([["B-PER", "O"]], [["I-PER", "O"]])["protocols"])
    assert columns[:2] == ["protocol", "label"]
    by = {(r[0], r[1]): r for r in rows}
    assert by[("conlleval", "PER")][4] == 1.0 and by[("strict", "micro avg")][4] == 0.0


def test_per_type_figure_only_for_entity_types():
    fig = per_type_figure({"f1": 0.5, "f1_PER": 0.4, "f1_LOC": 0.9, "precision": 0.3})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["LOC", "PER"]
    assert per_type_figure({"f1": 0.5, "f1_macro": 0.3, "accuracy": 0.9}) is None


def test_objective_returns_the_optimized_metric(tmp_path):
    from omegaconf import OmegaConf

    (tmp_path / "val_history.json").write_text(
        json.dumps(
            {
                "history": [
                    {"val/f1": 0.2, "val/loss": 1.5},
                    {"val/f1": 0.6, "val/loss": 1.1},
                    {"val/f1": 0.4, "val/loss": 1.3},
                ]
            }
        )
    )
    cfg = OmegaConf.create(
        {"paths": {"output_dir": str(tmp_path)}, "monitor": {"metric": "val/f1", "mode": "max"}}
    )
    assert objective(cfg, {"test/f1": 0.3}) is None
    cfg.optimized_metric = "val/f1"
    assert objective(cfg, {}) == 0.6
    cfg.optimized_metric = "val/loss"
    assert metric_goal("val/loss", cfg) == "minimize" and objective(cfg, {}) == 1.1
    cfg.optimized_metric = "test/f1"
    assert objective(cfg, {"test/f1": 0.3}) == 0.3
    cfg.optimized_metric = "val/nothing"
    with pytest.raises(Exception, match="val/nothing"):
        objective(cfg, {})
    # The rows a run kept in memory win over the file (which a sweep process never needs to read back).
    cfg.optimized_metric = "val/f1"
    assert objective(cfg, {}, [{"val/f1": 0.1}, {"val/f1": 0.9}, {"val/loss": 2.0}]) == 0.9
