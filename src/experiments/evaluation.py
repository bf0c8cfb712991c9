"""The typed result of one evaluation, the single seam between the task families and the run's outputs.

Why: every family's epoch end produces the same kind of thing (scores, a text report, per-class or per-type
rows, per-example records with ids, plots, extra files), and one writer
(:func:`experiments.reporting.write_evaluation`) turns it into the run's files and the loggers' tables and
images. So no family writes files itself, nothing re-parses a text report, and a new family only fills
this record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvaluationResult"]


@dataclass(frozen=True)
class EvaluationResult:
    """What one evaluation of a split produced.

    Attributes:
        stage: ``val``, ``test`` or ``predict``.
        metrics: the scores as logged, without the stage prefix (``f1``, ``accuracy``, ``mrr``...).
        report: the text report (``classification_report.txt``); "" for none.
        records: one JSON-able dict per example with its id (``predictions.jsonl``); test and predict only.
        table: ``(columns, rows)`` of per-class or per-type scores (a W&B table), or ``None``.
        figures: file name -> matplotlib ``Figure`` (written as PNG, logged as images).
        files: file name -> text of extra files (MIND's ``prediction.txt``).
        details: the family's own data (scores, decoded tags, thresholds) for its records and for tests.
    """

    stage: str
    metrics: Mapping[str, Any]
    report: str = ""
    records: Sequence[dict] = ()
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
