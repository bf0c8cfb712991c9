"""Batch size functions for Lightning's ``ThroughputMonitor`` (samples/s and non-pad tokens/s)."""

from __future__ import annotations

from typing import Any


def batch_examples(batch: dict[str, Any]) -> int:
    """Number of sequences in a collated batch (``input_ids`` is ``[batch, seq]``)."""
    return int(batch["input_ids"].shape[0])


def batch_tokens(batch: dict[str, Any]) -> int:
    """Number of non-pad tokens in a collated batch (sum of ``attention_mask``)."""
    return int(batch["attention_mask"].sum())
