"""Pinned paper baselines: their configs, the table writer and run-to-run determinism."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_config
from experiments import baselines
from test_cli import data_overrides, write_data

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
BASELINES = [
    n for n in EXPERIMENTS if "baseline:" in (ROOT / "conf" / "experiment" / f"{n}.yaml").read_text()
]


def test_the_paper_baselines_and_their_offline_twins_exist():
    for name in (
        "ner_conll2003_bert",
        "ner_conll2003_minilm",
        "intent_banking77_bert",
        "intent_banking77_minilm",
        "sentiment_phrasebank50_bert",
        "sentiment_phrasebank50_minilm",
        "sentiment_phrasebank100_bert",
        "sentiment_phrasebank100_minilm",
    ):
        assert name in BASELINES


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_config_pins_everything(name, tmp_path):
    b = baselines.load_baseline(name)
    assert 0 < b["published"] <= 1 and b["metric"].startswith("test/") and b["source"]
    assert len(b["seeds"]) >= 3 and len(set(b["seeds"])) == len(b["seeds"])
    cfg = compose_config([f"experiment={name}"], output_dir=tmp_path)
    assert cfg.trainer.deterministic in (True, "warn")
    if cfg.task_name != "ner":  # carved splits must not move with the training seed
        assert isinstance(cfg.data.split_seed, int)
    for key in ("optimizer.lr", "data.batch_size", "trainer.max_epochs", "module.warmup_ratio"):
        assert cfg_value(cfg, key) is not None, key


def cfg_value(cfg, key):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, throw_on_missing=True)


def fake_runs(out: Path, name: str, values: dict[int, float], metric: str = "test/f1") -> None:
    for seed, value in values.items():
        run = out / name / f"seed_{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({metric: value, "test/checkpoint": "x"}))


def test_table_of_fake_runs_has_mean_sample_std_and_difference(tmp_path):
    fake_runs(tmp_path, "ner_conll2003_minilm", {1: 0.90, 2: 0.92, 3: 0.94})
    row, failed = baselines.run_baseline("ner_conll2003_minilm", tmp_path, table_only=True)
    assert failed == []
    # mean = 0.92; sample std = sqrt(((-0.02)^2 + 0 + 0.02^2) / (3 - 1)) = 0.02; 0.92 - 0.924 = -0.004
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.92) and row["std"] == pytest.approx(0.02)
    assert row["published"] == 0.924 and row["difference"] == pytest.approx(-0.004)

    [saved] = list(csv.DictReader((tmp_path / "ner_conll2003_minilm" / "results.csv").open()))
    assert float(saved["mean"]) == pytest.approx(0.92) and float(saved["std"]) == pytest.approx(0.02)
    assert float(saved["difference"]) == pytest.approx(-0.004) and saved["seeds"] == "1 2 3"
    assert "Devlin et al. 2019" in saved["source"]
    md = (tmp_path / "ner_conll2003_minilm" / "results.md").read_text()
    assert "| ner_conll2003_minilm | test/f1 | 3 | 0.9200 ± 0.0200 | 0.9240 | -0.0040 | Devlin et al." in md
    assert "seed 2: 0.9200" in md


def test_table_with_one_seed_has_no_std_and_missing_seeds_are_left_out(tmp_path):
    fake_runs(tmp_path, "intent_banking77_minilm", {2: 0.9}, metric="test/accuracy")
    row, _ = baselines.run_baseline("intent_banking77_minilm", tmp_path, table_only=True)
    assert row["n"] == 1 and row["std"] is None and row["difference"] == pytest.approx(0.9 - 0.9366)
    md = (tmp_path / "intent_banking77_minilm" / "results.md").read_text()
    assert "| 1 | 0.9000 | 0.9366 | -0.0366 |" in md


def test_summary_table_over_several_baselines(tmp_path):
    fake_runs(tmp_path, "ner_conll2003_minilm", {1: 0.9, 2: 0.91, 3: 0.92})
    fake_runs(tmp_path, "sentiment_phrasebank50_minilm", {1: 0.8, 2: 0.82, 3: 0.84}, metric="test/accuracy")
    code = baselines.main(
        ["ner_conll2003_minilm", "sentiment_phrasebank50_minilm", "--table-only", "--out", str(tmp_path)]
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["baseline"] for r in rows] == ["ner_conll2003_minilm", "sentiment_phrasebank50_minilm"]
    assert float(rows[1]["mean"]) == pytest.approx(0.82) and float(rows[1]["published"]) == 0.86


def test_unknown_or_unpinned_experiment_is_a_config_error(capsys):
    assert baselines.main(["no_such_experiment", "--table-only"]) == 2
    assert "no_such_experiment" in capsys.readouterr().err


def test_same_seed_twice_gives_identical_metrics(tmp_path, tiny_encoder_dir):
    """`make baselines` end to end on the tiny model: two runs of seed 5 in separate processes."""
    files = write_data(tmp_path / "data")
    extra = [
        f"model.name_or_path={tiny_encoder_dir}",
        *data_overrides(files),
        "debug=limit",
        "trainer.precision=32",
        "export.model=false",
        "~callbacks.progress_bar",
    ]
    metrics = []
    for out in (tmp_path / "a", tmp_path / "b"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.baselines",
                "ner_conll2003_minilm",
                "--seeds",
                "5",
                "--out",
                str(out),
                "--",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        metrics.append(json.loads((out / "ner_conll2003_minilm" / "seed_5" / "metrics.json").read_text()))
        assert (out / "ner_conll2003_minilm" / "results.md").is_file()
    tested = {k: v for k, v in metrics[0].items() if k.startswith("test/") and k != "test/checkpoint"}
    assert "test/loss" in tested and "test/f1" in tested
    assert tested == {k: metrics[1][k] for k in tested}
