"""Answer selection data: (customer message, answer) pairs, seeded splits, answer pools and BM25.

Why in the ranking family: picking the answer template for a message is ranking a pool of candidates
for a query, scored with the family's metrics (:mod:`~experiments.tasks.recommendation.answer_metrics`).
Pairs come from a table (Bitext: ``instruction``, ``response``, ``intent``); a file without validation and
test files is carved into a seeded 80/10/10 split stratified by intent (the same rows as the intent and
slot tasks with the same seed). The candidate pool of a split is the answers of that split's pairs, so a
test message is ranked against answers never seen in training (Bitext's answers are unique per pair).

BM25 (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009; Lucene's
``idf = ln(1 + (N - n + 0.5) / (n + 0.5))``, ``k1 = 1.2``, ``b = 0.75``) over lower-cased ``\\w+`` tokens
is the lexical baseline and the cross-encoder's default first stage.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.errors import DataError
from experiments.tasks.tables import require, scalar, table_format, table_records

__all__ = ["Pair", "read_pairs", "bm25_scores", "r10_negatives", "tokens"]


@dataclass(frozen=True)
class Pair:
    """One support exchange.

    Attributes:
        id: the row or line number, or the ``id_column`` value.
        message: the customer's text.
        answer: the answer (template placeholders such as ``{{Order Number}}`` kept as written).
        intent: the intent the answer was written for ("" when the file has none).
        line: row (CSV, header = row 1) or line (JSON Lines) it came from.
    """

    id: str
    message: str
    answer: str
    intent: str = ""
    line: int | None = None


def read_pairs(path: str | os.PathLike[str], *, message_column: str = "instruction",
               answer_column: str | None = "response", intent_column: str | None = "intent",
               id_column: str | None = None, format: str | None = None) -> list[Pair]:
    """Read (message, answer, intent) rows from a CSV/TSV/JSON Lines table.

    ``answer_column=None`` reads messages only (predict files); answers are then "".

    Raises:
        DataError: a missing column or key, an empty message or answer, a duplicate id, no rows, and every
            table error of :mod:`experiments.tasks.tables`; each names the file and row.
    """
    p = Path(path)
    fmt = table_format(p, format)
    needed = [c for c in (message_column, answer_column, intent_column, id_column) if c is not None]
    pairs: list[Pair] = []
    seen: set[str] = set()
    for rec in table_records(p, fmt, needed):
        require(p, rec, needed)
        message = scalar(p, rec, message_column, rec.values[message_column], "text").strip()
        if not message:
            raise DataError(p, rec.line, f"{rec.where}empty message in {message_column!r}; expected a text")
        answer = ""
        if answer_column is not None:
            answer = scalar(p, rec, answer_column, rec.values[answer_column], "text").strip()
            if not answer:
                raise DataError(p, rec.line, f"{rec.where}empty answer in {answer_column!r}; expected a text")
        intent = scalar(p, rec, intent_column, rec.values[intent_column], "label").strip() if intent_column else ""
        pid = scalar(p, rec, id_column, rec.values[id_column], "id").strip() if id_column else rec.default_id
        if pid in seen:
            raise DataError(p, rec.line, f"{rec.where}duplicate id {pid!r}; expected each id once")
        seen.add(pid)
        pairs.append(Pair(pid, message, answer, intent, rec.line))
    if not pairs:
        raise DataError(p, None, f"no rows; expected columns {', '.join(needed)}")
    return pairs


_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens (the BM25 baseline's analyser)."""
    return _WORD.findall(text.lower())


def bm25_scores(queries: Sequence[str], documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 score of every document for every query (see the module docstring for the formula).

    Returns:
        ``[len(queries), len(documents)]`` float64 array.
    """
    docs = [Counter(tokens(d)) for d in documents]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    avg = float(lengths.mean()) if len(docs) else 0.0
    df = Counter(t for d in docs for t in d)
    n = len(docs)
    idf = {t: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
    norm = k1 * (1.0 - b + b * lengths / avg) if avg else np.full(n, k1)
    out = np.zeros((len(queries), n), dtype=np.float64)
    for qi, q in enumerate(queries):
        for t in set(tokens(q)):
            if t not in idf:
                continue
            tf = np.array([d.get(t, 0) for d in docs], dtype=np.float64)
            out[qi] += idf[t] * tf * (k1 + 1.0) / (tf + norm)
    return out


def r10_negatives(pool_size: int, gold: Sequence[int], seed: int, k: int = 9) -> list[list[int]]:
    """For each message ``i``, ``k`` distinct pool indices other than ``gold[i]`` (R10@1, Lowe et al. 2015).

    Drawn by ``numpy.random.RandomState([seed, i]).permutation`` over the pool without the gold answer,
    the first ``k`` taken: the same on every machine (the legacy stream is frozen by NumPy's policy).

    Raises:
        ValueError: the pool has fewer than ``k + 1`` answers.
    """
    if pool_size < k + 1:
        raise ValueError(f"R10@1 needs at least {k + 1} answers in the pool; got {pool_size}")
    out = []
    for i, g in enumerate(gold):
        others = np.array([j for j in range(pool_size) if j != g], dtype=np.int64)
        out.append(others[np.random.RandomState([seed, i]).permutation(len(others))[:k]].tolist())
    return out
