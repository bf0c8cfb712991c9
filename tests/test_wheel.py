"""The configs and embedded data ship inside the wheel: `python -m experiments` works from an install
that is not this checkout, launched from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_built_wheel_runs_from_another_directory(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist")],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("experiments-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "experiments/conf/config.yaml" in names
    assert "experiments/conf/task/ner.yaml" in names
    assert "experiments/resources/wnut17/wnut17train.conll" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import experiments; print(experiments.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))
    out = subprocess.run(
        [sys.executable, "-m", "experiments", "--cfg", "job", "--resolve", "hydra.run.dir=out"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "task_name: ner" in out.stdout
    # The default data resolves to the copy inside the installed package.
    assert f"train_file: {site}/experiments/resources/wnut17/wnut17train.conll" in out.stdout
