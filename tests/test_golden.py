"""Golden numbers: a fixed-seed run on the tiny BERT must keep producing the same losses.

The expected values were recorded from this code; they change only when training changes (data
order, initialisation, loss, optimizer or schedule). When a change is intended, re-record them and
say why in the commit.
"""

import pytest

from test_cli import data_overrides, write_data

# Recorded with seed=7 on the tiny BERT of conftest (torch 2.13 CPU, fp32).
GOLDEN_FIRST_STEP_LOSS = 1.949381709098816
GOLDEN_TEST_LOSS = 1.8037981986999512


def test_golden_loss(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    metrics, run_dir = run_cli("debug=limit", "trainer.max_epochs=3", "seed=7", "optimizer.lr=1e-3",
                               "callbacks.early_stopping=null", *data_overrides(files))
    header, *rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("train/loss_step")
    steps = [float(r.split(",")[col]) for r in rows if r.split(",")[col]]
    assert len(steps) == 6
    assert steps[0] == pytest.approx(GOLDEN_FIRST_STEP_LOSS, abs=1e-4)
    assert metrics["test/loss"] == pytest.approx(GOLDEN_TEST_LOSS, abs=1e-4)
