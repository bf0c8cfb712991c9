"""Paths a user walks that used to crash, export the wrong weights or load silently (each test failed
before its fix): best-weight export without a test split, test/predict with a model trained on other
data, partial evaluation, mismatched checkpoints, fine-tuned starting models, unseen gold types, runs
that end before validating, every Trainer argument, Hydra's errors, and multirun with a failing job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.errors import ConfigError
from experiments.tasks.ner.metrics import entity_scores
from test_cli import TEST, data_overrides, write_data

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_holds_the_best_weights_without_a_test_split(run_cli, tmp_path):
    """Train + validation only; the best checkpoint (monitor: the smallest step, i.e. the first epoch) is
    two epochs older than the last weights, and the export must hold the best."""
    files = write_data(tmp_path / "data")
    files.pop("test")
    metrics, run_dir = run_cli(*data_overrides(files), "data.test_file=null", "trainer.max_epochs=3",
                               "optimizer.lr=1e-2", "callbacks.early_stopping=null",
                               "callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=min")
    best = Path(metrics["train/best_checkpoint"])
    assert "epoch00" in best.name and "test/f1" not in metrics
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    from safetensors.torch import load_file

    exported = load_file(run_dir / "model" / "model.safetensors")
    key = "classifier.weight"
    assert not torch.equal(state[f"model.{key}"], last[f"model.{key}"])  # training moved on after the best
    for name, tensor in exported.items():
        assert torch.equal(tensor, state[f"model.{name}"]), name


def test_test_and_predict_with_a_model_trained_on_other_data(run_cli, tmp_path):
    """A checkpoint trained on PER/LOC/ORG data is tested and used for prediction with only the files it
    needs: the default (WNUT-17) training and validation files, whose types differ, are not read."""
    files = write_data(tmp_path / "data")
    _, run_dir = run_cli("debug=limit", *data_overrides(files))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    metrics, _ = run_cli("mode=test", f"ckpt_path={ckpt}", f"data.test_file={files['test']}",
                         run_dir=tmp_path / "test")
    assert "test/f1" in metrics and metrics["test/checkpoint"] == str(ckpt)
    text = tmp_path / "input.txt"
    text.write_text("john works at google\n")
    run_cli("mode=predict", f"ckpt_path={ckpt}", f"data.predict_file={text}", run_dir=tmp_path / "pred")
    [row] = read_jsonl(tmp_path / "pred" / "predictions.jsonl")
    assert row["words"] == ["john", "works", "at", "google"]
    # From the exported model folder instead of a checkpoint.
    run_cli("mode=predict", f"model.name_or_path={run_dir / 'model'}", f"data.predict_file={text}",
            run_dir=tmp_path / "pred2")
    assert len(read_jsonl(tmp_path / "pred2" / "predictions.jsonl")) == 1


def test_classification_test_mode_reads_only_the_test_file(tmp_path, tiny_encoder_dir):
    from cli_helpers import run_cli as cli

    rows = [("{w} refund", "refund"), ("{w} cancel order", "cancel")]
    words = ["the", "bank", "of", "america", "new", "york", "john", "smith"]
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t.format(w=w)},{lab}\n" for w in words for t, lab in rows))
    out = tmp_path / "out"
    cli(["task=text_classification", f"model.name_or_path={tiny_encoder_dir}", f"data.train_file={train}",
         "debug=limit", "data.batch_size=4"], out)
    test = tmp_path / "test.csv"
    test.write_text("text,label\nmy refund,refund\ncancel my order,cancel\n")
    # task=support_intent defaults to the embedded banking77 (77 other intents): not read in test mode.
    metrics = cli(["task=support_intent", f"model.name_or_path={tiny_encoder_dir}", "mode=test",
                   f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "data.source=table",
                   f"data.test_file={test}", "data.text_column=text", "data.label_column=label"], tmp_path / "t")
    assert "test/accuracy" in metrics


def test_partial_evaluation_scores_only_the_sentences_it_ran(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    metrics, run_dir = run_cli("debug=limit", *data_overrides(files), "data.eval_batch_size=1",
                               "trainer.limit_test_batches=1")
    rows = read_jsonl(run_dir / "predictions.jsonl")
    assert [r["id"] for r in rows] == [0]  # one batch of one sentence: only the first test sentence
    expected = entity_scores([rows[0]["gold"]], [rows[0]["tags"]])["metrics"]
    assert metrics["test/recall"] == pytest.approx(expected["recall"])
    assert metrics["test/f1"] == pytest.approx(expected["f1"])


def test_a_lora_checkpoint_with_other_settings_is_refused_by_name(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    _, run_dir = run_cli("debug=limit", "finetune=lora", *data_overrides(files))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["finetune"]["name"] == "lora" and saved["finetune"]["adapter"]["r"] == 8
    for overrides in (["finetune=lora", "finetune.adapter.target_modules=[query,key]"],
                      ["finetune=lora", "finetune.adapter.r=4"], ["finetune=full"]):
        with pytest.raises(ConfigError, match="does not fit this model") as err:
            run_cli("mode=test", f"ckpt_path={ckpt}", f"data.test_file={files['test']}", *overrides,
                    run_dir=tmp_path / "t")
        assert "'name': 'lora'" in str(err.value)
    # The same settings load (every missing key is a frozen pretrained weight).
    metrics, _ = run_cli("mode=test", f"ckpt_path={ckpt}", f"data.test_file={files['test']}", "finetune=lora",
                         run_dir=tmp_path / "ok")
    assert "test/f1" in metrics


def _permuted_model(src: Path, dst: Path) -> list[str]:
    """A copy of the exported NER model whose label ids are reversed, head rows permuted to match."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(src)
    n = model.config.num_labels
    perm = list(reversed(range(n)))
    labels = [model.config.id2label[i] for i in perm]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[perm].clone())
        model.classifier.bias.copy_(model.classifier.bias[perm].clone())
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {lab: i for i, lab in enumerate(labels)}
    model.save_pretrained(dst)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return labels


def test_starting_from_a_fine_tuned_model_keeps_its_label_order(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    _, first = run_cli("debug=limit", *data_overrides(files))
    labels = _permuted_model(first / "model", tmp_path / "permuted")
    # lr 0: the export must be the starting model, head and id2label together.
    _, second = run_cli("debug=limit", *data_overrides(files), f"model.name_or_path={tmp_path / 'permuted'}",
                        "optimizer.lr=0", run_dir=tmp_path / "second")
    config = json.loads((second / "model" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    from safetensors.torch import load_file

    start = load_file(tmp_path / "permuted" / "model.safetensors")
    end = load_file(second / "model" / "model.safetensors")
    assert torch.equal(start["classifier.weight"], end["classifier.weight"])

    # Another label set: refused, unless a new head is asked for.
    other = dict(files)
    other["train"] = tmp_path / "other.txt"
    other["train"].write_text("john B-PER\nsmith I-PER\nbank B-MONEY\n")
    other["validation"] = other["test"] = other["train"]
    with pytest.raises(ConfigError, match="new_head"):
        run_cli("debug=limit", *data_overrides(other), f"model.name_or_path={tmp_path / 'permuted'}",
                run_dir=tmp_path / "third")
    run_cli("debug=limit", *data_overrides(other), f"model.name_or_path={tmp_path / 'permuted'}",
            "model.new_head=true", run_dir=tmp_path / "fourth")
    config = json.loads((tmp_path / "fourth" / "model" / "config.json").read_text())
    assert set(config["label2id"]) == {"O", "B-PER", "I-PER", "B-MONEY", "I-MONEY"}


def test_unknown_labels_o_keeps_unseen_types_in_the_gold(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    files["test"].write_text(TEST + "\nparis B-GPE\n")
    metrics, run_dir = run_cli("debug=limit", *data_overrides(files), "data.unknown_labels=O")
    rows = read_jsonl(run_dir / "predictions.jsonl")
    assert rows[-1]["gold"] == ["B-GPE"]
    gold = [r["gold"] for r in rows]
    assert metrics["test/recall"] == pytest.approx(entity_scores(gold, [r["tags"] for r in rows])["metrics"]["recall"])
    assert "GPE (1)" in (run_dir / "classification_report.txt").read_text()


def test_a_run_that_ends_before_its_first_validation_validates_once(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    # 3 training sentences, batch 1: 3 steps an epoch; max_steps=1 stops before the epoch's validation.
    metrics, run_dir = run_cli(*data_overrides(files), "data.batch_size=1", "trainer.max_steps=1",
                               "trainer.num_sanity_val_steps=0")
    assert "test/f1" in metrics and Path(metrics["train/best_checkpoint"]).is_file()
    assert (run_dir / "model" / "config.json").is_file()


def test_every_trainer_argument_is_settable_without_plus(tmp_path):
    import inspect

    import lightning as L

    from conftest import compose_config

    params = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    cfg = compose_config(["trainer.max_steps=5", "trainer.max_time=00:00:10:00", "trainer.benchmark=true"],
                         output_dir=tmp_path)
    assert set(cfg.trainer) - {"_target_"} == params
    assert cfg.trainer.max_steps == 5


def _cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("args,expected", [
    (["trainer.no_such_arg=1"], "no_such_arg"),
    (["task=no_such_task"], "no_such_task"),
    (["trainer.max_epochs=[unclosed"], "[unclosed"),
])
def test_hydra_errors_are_one_line_and_exit_2(args, expected, tmp_path):
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_multirun_goes_on_after_a_failing_job_and_each_job_has_its_own_closed_wandb_run(tmp_path, tiny_encoder_dir):
    from test_wandb import read_offline_run

    files = write_data(tmp_path / "data")
    bad = tmp_path / "data" / "bad.txt"
    bad.write_text("john B-PER\nparis B-GPE\n")  # a tag unseen in training: the job fails in setup
    sweep = tmp_path / "sweep"
    result = _cli("-m", f"hydra.sweep.dir={sweep}", f"model.name_or_path={tiny_encoder_dir}",
                  "trainer.precision=32", "debug=limit", "logger=wandb", "logger.wandb.mode=offline",
                  "~callbacks.progress_bar", *[f"data.{k}_file={v}" for k, v in files.items() if k != "test"],
                  f"data.test_file={bad},{files['test']}", "data.batch_size=2",
                  cwd=tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": "",
                                     **{v: str(tmp_path / v.lower()) for v in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
                                                                               "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in summary] == ["failed", "completed"]
    assert "B-GPE" in summary[0]["error"]
    assert "1 of 2 jobs failed" in result.stdout + result.stderr
    runs = [read_offline_run(sweep / str(i)) for i in (0, 1)]
    assert runs[0]["folder"] != runs[1]["folder"]
    assert runs[1]["config"]["data"]["test_file"] == str(files["test"])
    assert json.loads((sweep / "1" / "metrics.json").read_text())["test/f1"] >= 0


def test_test_and_predict_runs_write_next_to_the_trained_run(tmp_path):
    from experiments.config import run_dir

    run = tmp_path / "outputs" / "ner" / "2026-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model").mkdir()
    (run / "config.yaml").write_text("{}")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert run_dir("ner", "predict", str(ckpt), None, "T") == str(run / "predict_T")
    assert run_dir("ner", "test", str(ckpt), None, "T") == str(run / "test_T")
    assert run_dir("ner", "predict", None, str(run / "model"), "T") == str(run / "predict_T")
    assert run_dir("ner", "train", str(ckpt), None, "T") == "outputs/ner/T"  # resuming keeps Hydra's default
    assert run_dir("ner", "predict", None, "bert-base-cased", "T") == "outputs/ner/T"  # a hub model
    assert run_dir("ner", "predict", str(tmp_path / "elsewhere.ckpt"), None, "T") == "outputs/ner/T"


def test_a_finished_run_keeps_one_resume_state_and_the_best_weights_once(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    _, run_dir = run_cli("debug=limit", "trainer.max_epochs=2", *data_overrides(files))
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    with_optimizer = [p for p in ckpts if torch.load(p, map_location="cpu", weights_only=True).get("optimizer_states")]
    assert [p.name for p in with_optimizer] == ["last.ckpt"]  # one resume state
    best = [p for p in ckpts if p.name != "last.ckpt"]
    assert len(best) == 1  # the best weights, once, without optimizer state
    assert "state_dict" in torch.load(best[0], map_location="cpu", weights_only=True)
