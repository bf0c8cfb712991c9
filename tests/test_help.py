"""``python -m experiments --help``: our own text, generated from the config folder, every option in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.config import config_dir
from experiments.help import GROUPS, help_text, preset_tasks


def test_help_lists_every_group_and_option_with_a_description():
    text = help_text()
    conf = Path(config_dir())
    for group in GROUPS:
        assert f"\n{group}: " in text, group
        for p in (conf / group).glob("*.yaml"):
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(p.stem + " ") or ln.strip() == p.stem)
            assert len(line.strip()) > len(p.stem) + 5, f"{group}/{p.stem} has no description"
    assert "$" not in text  # Hydra's template would substitute it


def test_every_dataset_preset_names_its_task():
    tasks = {p.stem for p in (Path(config_dir()) / "task").glob("*.yaml")}
    fits = preset_tasks(Path(config_dir()))
    assert fits and all(ts and set(ts) <= tasks for ts in fits.values())
    assert fits["conll2003"] == ["ner"] and fits["banking77"] == ["support_intent"]


def test_cli_help_is_ours_and_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("experiments: fine-tune")
    assert "with task=ner:" in proc.stdout and "Examples:" in proc.stdout and "Outputs:" in proc.stdout
    assert "== Config ==" not in proc.stdout  # not Hydra's stock text with the whole config
