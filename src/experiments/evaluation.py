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
from typing import Any, Protocol, runtime_checkable

__all__ = ["EvaluationResult", "protocol_members", "TaskData", "TokenClassificationData", "SequenceClassificationData", "ClickData",
           "AnswerData"]


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


# ---- what evaluation reads from a family's datamodule ----------------------------------------------
# One small typed protocol per family: the module asks its datamodule for these and nothing else
# (``EncoderModule.data()`` checks it, so a config that pairs a module with another family's data fails
# with one line naming what is missing). Split names are ``train``, ``validation``, ``test``, ``predict``.


def protocol_members(protocol: type) -> list[str]:
    """The public attributes and methods a protocol of this module asks for (its own and inherited)."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        names |= {n for n in (*vars(cls), *getattr(cls, "__annotations__", {})) if not n.startswith("_")}
    return sorted(names)


@runtime_checkable
class TaskData(Protocol):
    """What the entry point reads from every datamodule: the label names and the planned file of each split."""

    files: Mapping[str, str | None]

    @property
    def labels(self) -> list[str]: ...


@runtime_checkable
class TokenClassificationData(TaskData, Protocol):
    """NER evaluation: word-level gold tags and the sentence windows behind the evaluated features."""

    def sentences_of(self, split: str) -> Sequence[Any]:
        """The sentences of ``split``, index = ``example_id`` (``words``, ``tags``, ``id``, ``text``, ``offsets``)."""

    def gold_tags(self, split: str) -> list[list[str]]:
        """Word-level IOB2 gold tags per sentence, index = ``example_id``."""

    def windows_per_example(self, split: str) -> list[int]:
        """How many encoded windows each sentence has (a long sentence is several)."""

    def unseen_types(self, split: str) -> list[str]:
        """Gold entity types of ``split`` that training never saw."""


@runtime_checkable
class SequenceClassificationData(TaskData, Protocol):
    """Sentence-classification evaluation: the examples behind ``example_id``, the training class counts
    (class weights) and the training split for the SetFit head."""

    examples: Mapping[str, Sequence[Any]]

    def class_counts(self) -> Any:
        """Training examples per class ``[C]`` (multi-label: positives per label)."""

    def num_examples(self, split: str) -> int: ...

    def embedding_loader(self, split: str = "train") -> Any:
        """Every example of ``split`` in order, unsharded, in batches with ``labels``."""


@runtime_checkable
class ClickData(TaskData, Protocol):
    """Click-prediction evaluation: the impressions (candidates, clicks, ids) of a split."""

    def impressions(self, split: str) -> Sequence[Any]: ...


@runtime_checkable
class AnswerData(TaskData, Protocol):
    """Answer-selection evaluation: the split's messages, answer pool and gold answers; answers kept per message."""

    top_k: int

    def eval_set(self, split: str) -> Any: ...
