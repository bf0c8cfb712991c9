"""Batch size functions for Lightning's ``ThroughputMonitor`` and a per-step timer for ``benchmarks/``.

Why here: the benchmark drives our normal CLI, so what it measures must be a callback the CLI can
instantiate (``+callbacks.step_times._target_=experiments.throughput.StepTimes``).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback


def batch_examples(batch: dict[str, Any]) -> int:
    """Number of sequences in a collated batch (``input_ids`` is ``[batch, seq]``)."""
    return int(batch["input_ids"].shape[0])


def batch_tokens(batch: dict[str, Any]) -> int:
    """Number of non-pad tokens in a collated batch (sum of ``attention_mask``)."""
    return int(batch["attention_mask"].sum())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepTimes(Callback):
    """Writes, at the end of training, the wall-clock end time of every training batch with its
    examples, non-pad tokens and padded shape, plus the start time of the first batch and the peak RSS.

    Args:
        path: the JSON file to write (``{"first_step_start": t, "steps": [...], "peak_rss_mib": m}``;
            times are ``time.time()`` seconds, so they compare with a launch time taken by another process).
    """

    def __init__(self, path: str):
        self.path = path
        self.first: float | None = None
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.first is None:
            self.first = time.time()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        ids = batch["input_ids"]
        self.steps.append({"end": time.time(), "examples": int(ids.shape[0]), "tokens": batch_tokens(batch),
                           "padded": [int(s) for s in ids.shape]})

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        Path(self.path).write_text(json.dumps({"first_step_start": self.first, "steps": self.steps,
                                               "peak_rss_mib": peak_rss_mib()}))
