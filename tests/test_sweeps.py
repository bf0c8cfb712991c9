"""W&B sweep files, the offline sweep runner (W&B's own engine, no server) and Hydra's Optuna sweeper."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import compose_config
from experiments import sweep
from experiments.errors import ConfigError
from test_cli import data_overrides, write_data

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
TASK_METRIC = {
    "ner": "val/f1",
    "financial_sentiment": "val/accuracy",
    "support_intent": "val/accuracy",
    "recommendation": "val/auc",
}


def overrides_of(argv: list[str]) -> list[str]:
    """The Hydra overrides of a ``... -m experiments <overrides>`` command line."""
    i = argv.index("-m")
    assert argv[i + 1] == "experiments"
    return argv[i + 2 :]


def test_there_is_a_sweep_per_task_and_method():
    names = {p.stem for p in SWEEP_FILES}
    for task in ("ner", "financial_sentiment", "support_intent"):
        assert {
            f"{task}_random",
            f"{task}_bayes",
            f"{task}_grid",
            f"{task}_lora_bayes",
            f"{task}_fgm_random",
        } <= names
    if (ROOT / "conf" / "task" / "recommendation.yaml").exists():
        assert {"recommendation_random", "recommendation_bayes", "recommendation_grid"} <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_sweep_file_validates_and_expands_to_hydra_overrides(path, tmp_path):
    config = sweep.load_sweep(path)  # W&B's schema, as `wandb sweep` checks it
    command = config["command"]
    assert command[:4] == ["${env}", "python", "-m", "experiments"] and command[-1] == "${args_no_hyphens}"
    assert "logger=wandb" in command
    assert config["project"] == "experiments" and config["metric"]["goal"] == "maximize"
    task = next(c.split("=", 1)[1] for c in command if str(c).startswith("task="))
    assert config["metric"]["name"] == TASK_METRIC[task]

    # One suggestion of W&B's engine, expanded as `wandb agent` expands it, composes in Hydra.
    params = sweep.suggest(config, [], seed=0, trial=0)
    argv = sweep.expand_command(config, params)
    assert argv[0] == sys.executable and not any(a.startswith("--") for a in argv)
    overrides = overrides_of(argv)
    assert overrides[-len(params) :] == sweep.command_args(params)
    cfg = compose_config(overrides, output_dir=tmp_path)
    for key, value in params.items():
        assert OmegaConf.select(cfg, key, throw_on_missing=True) == pytest.approx(value["value"]), key
    assert "wandb" in cfg.logger


def test_invalid_sweep_file_lists_the_violations(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"method": "bayes", "parameters": {"optimizer.lr": {"min": 1.0, "max": 0.1}}})
    )
    with pytest.raises(ConfigError) as err:
        sweep.load_sweep(bad)
    assert "optimizer.lr" in str(err.value) and "metric" in str(err.value)


def test_grid_ends_when_exhausted():
    config = {
        "method": "grid",
        "metric": {"name": "val/f1", "goal": "maximize"},
        "parameters": {"a": {"values": [1, 2]}},
    }
    seen = []
    for trial in range(3):
        params = sweep.suggest(config, seen, seed=0, trial=trial)
        if params is None:
            break
        seen.append({"trial": trial, "state": "finished", "config": params, "history": [0.5]})
    assert [r["config"]["a"]["value"] for r in seen] == [1, 2] and trial == 2


def test_read_history_prefers_val_history_then_csv_then_metrics(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,val/f1,train/loss\n0,1,,2.0\n0,2,0.25,\n1,4,0.5,\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"test/f1": 0.4}))
    assert sweep.read_history(tmp_path, "val/f1") == [0.25, 0.5]
    assert sweep.read_history(tmp_path, "test/f1") == [0.4]
    (tmp_path / "val_history.json").write_text(json.dumps({"history": [{"val/f1": 0.1}, {"val/f1": 0.3}]}))
    assert sweep.read_history(tmp_path, "val/f1") == [0.1, 0.3]
    assert sweep.read_history(tmp_path, "val/missing") == []


# ---- end to end on the tiny model: every trial is a `python -m experiments` subprocess ------------------
def tiny_sweep(tmp_path: Path, encoder: Path, method: str, logger: list[str]) -> Path:
    files = write_data(tmp_path / "data")
    command = [
        "${env}",
        "python",
        "-m",
        "experiments",
        "task=ner",
        *logger,
        f"model.name_or_path={encoder}",
        *data_overrides(files),
        "debug=limit",
        "trainer.precision=32",
        "export.model=false",
        "~callbacks.progress_bar",
        "${args_no_hyphens}",
    ]
    config = {
        "name": f"tiny_{method}",
        "method": method,
        "metric": {"name": "val/f1", "goal": "maximize"},
        "command": command,
        "parameters": {
            "optimizer.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "module.warmup_ratio": {"distribution": "uniform", "min": 0.0, "max": 0.2},
        },
    }
    path = tmp_path / f"tiny_{method}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_trials(result: dict, n: int) -> list[dict]:
    records = result["records"]
    assert [r["trial"] for r in records] == list(range(n))
    for r in records:
        assert r["state"] == "finished", Path(r["run_dir"], "trial.log").read_text()[-3000:]
        run_dir = Path(r["run_dir"])
        assert (run_dir / "val_history.json").is_file() and (run_dir / "metrics.json").is_file()
        assert r["history"] and r["score"] == max(r["history"])
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["optimizer"]["lr"] == pytest.approx(r["config"]["optimizer.lr"]["value"])
        assert saved["module"]["warmup_ratio"] == pytest.approx(r["config"]["module.warmup_ratio"]["value"])
    return records


def test_offline_random_sweep_writes_table_and_resumes(tmp_path, tiny_encoder_dir):
    sweep_file = tiny_sweep(
        tmp_path, tiny_encoder_dir, "random", ["logger=wandb", "logger.wandb.mode=disabled"]
    )
    out = tmp_path / "sweep"
    first = sweep.run_sweep(sweep_file, count=2, sweep_dir=out)
    assert first["ran"] == 2
    check_trials(first, 2)
    # The W&B trials of one sweep share a group.
    assert (
        "logger.wandb.group=tiny_random" in json.loads((out / "trial_000" / "trial.json").read_text())["argv"]
    )

    # Simulate a sweep killed while trial 2 ran: its folder holds trial.json (and debris) but no record.
    # Resuming with --count 3 runs only that trial, with the parameters it had.
    params = {"optimizer.lr": {"value": 0.005}, "module.warmup_ratio": {"value": 0.05}}
    (out / "trial_002" / "checkpoints").mkdir(parents=True)
    (out / "trial_002" / "trial.json").write_text(json.dumps({"trial": 2, "config": params}))
    second = sweep.run_sweep(sweep_file, count=3, sweep_dir=out)
    assert second["ran"] == 1
    records = check_trials(second, 3)
    assert records[2]["config"] == params and records[2]["overrides"] == sweep.command_args(params)
    assert records[:2] == first["records"]
    assert len(read_lines(out / "trials.jsonl")) == 3
    assert sweep.run_sweep(sweep_file, count=3, sweep_dir=out)["ran"] == 0

    table = list(csv.DictReader((out / "results.csv").open()))
    assert [float(r["val/f1"]) for r in table] == sorted((r["score"] for r in records), reverse=True)
    assert {r["trial"] for r in table} == {"0", "1", "2"}
    md = (out / "results.md").read_text()
    best = second["best"]
    assert f"Best: trial {best['trial']}" in md and " ".join(best["overrides"]) in md


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_offline_bayes_sweep_cli(tmp_path, tiny_encoder_dir):
    sweep_file = tiny_sweep(tmp_path, tiny_encoder_dir, "bayes", ["logger=csv"])
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", str(sweep_file), "--count", "3", "--dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = check_trials({"records": [json.loads(x) for x in read_lines(out / "trials.jsonl")]}, 3)
    assert len({r["config"]["optimizer.lr"]["value"] for r in records}) == 3
    assert (out / "results.md").is_file() and "best: trial" in proc.stdout


def test_optuna_hparams_search_composes():
    cfg = compose_config(["+hparams_search=ner_optuna", "hydra/sweeper=optuna"])
    assert cfg.optimized_metric == "val/f1" and cfg.task_name == "ner"
    for name, metric in (
        ("financial_sentiment_optuna", "val/accuracy"),
        ("support_intent_optuna", "val/accuracy"),
        ("recommendation_optuna", "val/auc"),
        ("ner_lora_optuna", "val/f1"),
    ):
        cfg = compose_config([f"+hparams_search={name}"])
        assert cfg.optimized_metric == metric
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler.seed == 1234
    assert "finetune.adapter.r" in sweeper.params and cfg.finetune.name == "lora"


def test_optuna_multirun_optimises_the_returned_metric(tmp_path, tiny_encoder_dir):
    files = write_data(tmp_path / "data")
    out = tmp_path / "multirun"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "-m",
            "+hparams_search=ner_optuna",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={out}",
            f"model.name_or_path={tiny_encoder_dir}",
            *data_overrides(files),
            "debug=limit",
            "trainer.precision=32",
            "export.model=false",
            "~callbacks.progress_bar",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    best = results["best_value"]
    runs = [
        max(r["val/f1"] for r in json.loads((out / str(i) / "val_history.json").read_text())["history"])
        for i in range(2)
    ]
    assert best == pytest.approx(max(runs))


def test_two_optuna_workers_share_one_sqlite_study(tmp_path, tiny_encoder_dir):
    """Two sweeper processes, started seconds apart, on one study in a SQLite database: every trial is
    recorded once, with distinct numbers, and both workers finish."""
    import time

    import optuna

    files = write_data(tmp_path / "data")
    db = tmp_path / "study.db"
    procs = []
    for worker in range(2):
        cmd = [sys.executable, "-m", "experiments", "-m", "+hparams_search=ner_optuna", "hydra.sweeper.n_trials=2",
               f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=shared",
               f"hydra.sweep.dir={tmp_path / f'worker{worker}'}", f"model.name_or_path={tiny_encoder_dir}",
               *data_overrides(files), "debug=limit", "trainer.precision=32", "export.model=false", "~callbacks.progress_bar"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(3)
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(4))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
