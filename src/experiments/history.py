"""A run's recorded scores: the validation history (``val_history.json``) and its fallbacks.

Why a module of its own: the sweep runners (``experiments.sweep``, Hydra's Optuna sweeper through
``tracking.objective``) read finished runs' scores, and reading them must not import Lightning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["HISTORY_FILE", "number", "read_history"]

HISTORY_FILE = "val_history.json"


def number(value: Any) -> float | None:
    """``value`` as a finite float (tensors and numeric strings too), else None."""
    try:
        value = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_history(run_dir: str | Path, name: str) -> list[float]:
    """Every value ``name`` took in a finished run, in order.

    Looks in ``val_history.json`` (the :class:`Tracking` callback), then ``csv/metrics.csv`` (the CSV
    logger), then ``metrics.json`` (test metrics and parameter counts). Empty when none has it.
    """
    run_dir = Path(run_dir)
    path = run_dir / HISTORY_FILE
    if path.is_file():
        try:
            rows = json.loads(path.read_text()).get("history", [])
        except (json.JSONDecodeError, AttributeError):
            rows = []
        values = [v for v in (number(r.get(name)) for r in rows if isinstance(r, dict)) if v is not None]
        if values:
            return values
    path = run_dir / "csv" / "metrics.csv"
    if path.is_file():
        import csv

        with path.open(newline="") as fh:
            values = [
                v for v in (number(r.get(name)) for r in csv.DictReader(fh) if r.get(name)) if v is not None
            ]
        if values:
            return values
    path = run_dir / "metrics.json"
    if path.is_file():
        try:
            value = number(json.loads(path.read_text()).get(name))
        except (json.JSONDecodeError, AttributeError):
            value = None
        if value is not None:
            return [value]
    return []
