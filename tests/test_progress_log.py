"""callbacks.progress_bar: on a console that is not a terminal (here: pytest's captured output) a run
reports its progress as log lines, so a log file or CI shows the epochs as they pass."""

from __future__ import annotations

import logging

import pytest

from experiments.callbacks import ProgressLog, progress_bar
from experiments.errors import ConfigError
from test_cli import data_overrides, write_data


def test_the_style_follows_the_console(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert isinstance(progress_bar(), ProgressLog)
    assert isinstance(progress_bar(style="rich"), RichProgressBar)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(), RichProgressBar)
    assert isinstance(progress_bar(style="log"), ProgressLog)
    with pytest.raises(ConfigError, match="style"):
        progress_bar(style="fancy")
    with pytest.raises(ValueError, match="every_n_steps"):
        ProgressLog(every_n_steps=0)


def test_a_run_logs_batches_validations_and_epochs(run_cli, tmp_path, caplog):
    # 3 training sentences at batch 2: 2 batches an epoch, 2 epochs, one validation after each.
    with caplog.at_level(logging.INFO, logger="experiments.callbacks"):
        run_cli("trainer.max_epochs=2", "callbacks.early_stopping=null", "callbacks.progress_bar.style=log",
                "callbacks.progress_bar.every_n_steps=1", *data_overrides(write_data(tmp_path / "data")))
    lines = [r.getMessage() for r in caplog.records if r.name == "experiments.callbacks"]
    batches = [m for m in lines if ", batch " in m]
    assert [m.split(", train/loss")[0] for m in batches] == [
        "epoch 1/2, batch 1/2", "epoch 1/2, batch 2/2", "epoch 2/2, batch 1/2", "epoch 2/2, batch 2/2"]
    assert all("train/loss " in m for m in batches)
    validations = [m for m in lines if "validation:" in m]
    assert [m.split(",")[0] for m in validations] == ["epoch 1/2", "epoch 2/2"]
    assert all("val/f1 " in m for m in validations)
    assert [m.split(" done")[0] for m in lines if " done in " in m] == ["epoch 1/2", "epoch 2/2"]
