"""Ranking metrics per impression, averaged over impressions, as MIND's official ``evaluate.py`` does.

Reference: the MIND competition scoring script (msnews.github.io, ``evaluate.py``; the same functions are
in the NRMS/recommenders code). Per impression, with ``y_true`` the 0/1 click labels of the candidates
and ``y_score`` their scores:

* AUC: ``sklearn.metrics.roc_auc_score(y_true, y_score)``. Implemented here as the Mann-Whitney
  statistic, P(score of a clicked > score of a non-clicked), a tie counting 1/2; that is exactly what
  sklearn's trapezoidal ROC area gives.
* MRR (their ``mrr_score``): candidates ordered by score, descending; ``sum(y_true / rank) / sum(y_true)``,
  i.e. the mean reciprocal rank of the clicked candidates.
* nDCG@k (their ``dcg_score``/``ndcg_score``): DCG = sum over the first k of the order of
  ``(2**y - 1) / log2(rank + 1)``; divided by the DCG of the ideal order (labels sorted descending).

Order of tied scores. The script orders with ``np.argsort(y_score)[::-1]``: numpy's default sort
(introsort), then reversed. numpy's introsort sorts arrays of at most 16 elements by insertion sort,
which is stable, so there tied candidates come out in *reverse input order*: of two candidates with the
same score, the later one is ranked first. For longer arrays the order of ties depends on numpy's
partitioning (and on AVX-512 builds, on x86-simd-sort) and is not defined. We use
``np.argsort(y_score, kind="stable")[::-1]``: the script's order wherever it is defined, and the same rule
(later candidate first) at every length and on every machine. Ties change MRR and nDCG only; AUC counts
them as 1/2 whatever the order.

Impressions with no click or no non-click have no AUC (sklearn raises; the script would stop there):
they are left out of every average and counted as ``excluded_impressions``. MIND's submission file gives
ranks, which the script turns into scores ``1 / rank``; :func:`ranks_from_scores` makes those ranks with
the same tie rule, so scoring a written ``prediction.txt`` with the official script gives the same MRR and
nDCG as logged (and the same AUC unless raw scores tie).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


def descending_order(y_score: Sequence[float] | np.ndarray) -> np.ndarray:
    """Candidate indices by score, best first; ties: the later candidate first (see module docstring)."""
    return np.argsort(np.asarray(y_score, dtype=np.float64), kind="stable")[::-1]


def auc_score(y_true: Sequence[float], y_score: Sequence[float]) -> float:
    """ROC AUC of one impression (Mann-Whitney U / (P * N), ties 1/2); needs both classes.

    Raises:
        ValueError: only one class is present (as sklearn's ``roc_auc_score``).
    """
    y = np.asarray(y_true, dtype=np.float64) > 0
    s = np.asarray(y_score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one clicked and one non-clicked candidate")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average 1-based rank of each group of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mrr_score(y_true: Sequence[float], y_score: Sequence[float]) -> float:
    """MIND's ``mrr_score``: ``sum(y_true[order] / (arange + 1)) / sum(y_true)``."""
    y = np.asarray(y_true, dtype=np.float64)
    ranked = np.take(y, descending_order(y_score))
    return float(np.sum(ranked / (np.arange(len(ranked)) + 1)) / np.sum(ranked))


def dcg_score(y_true: Sequence[float], y_score: Sequence[float], k: int = 10) -> float:
    """MIND's ``dcg_score``: gains ``2**y - 1``, discounts ``log2(rank + 1)``, the first ``k`` of the order."""
    y = np.asarray(y_true, dtype=np.float64)
    ranked = np.take(y, descending_order(y_score)[:k])
    return float(np.sum((2**ranked - 1) / np.log2(np.arange(len(ranked)) + 2)))


def ndcg_score(y_true: Sequence[float], y_score: Sequence[float], k: int = 10) -> float:
    """MIND's ``ndcg_score``: ``dcg_score(y_true, y_score, k) / dcg_score(y_true, y_true, k)``."""
    return dcg_score(y_true, y_score, k) / dcg_score(y_true, y_true, k)


def impression_metrics(y_true: Sequence[float], y_score: Sequence[float]) -> dict[str, float] | None:
    """AUC, MRR, nDCG@5, nDCG@10 of one impression; None when it has no click or no non-click."""
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_true)} labels but {len(y_score)} scores")
    n_pos = sum(1 for y in y_true if y > 0)
    if n_pos == 0 or n_pos == len(y_true):
        return None
    return {
        "auc": auc_score(y_true, y_score),
        "mrr": mrr_score(y_true, y_score),
        "ndcg@5": ndcg_score(y_true, y_score, 5),
        "ndcg@10": ndcg_score(y_true, y_score, 10),
    }


def ranking_metrics(impressions: Iterable[tuple[Sequence[float], Sequence[float]]]) -> dict[str, Any]:
    """Means over impressions of :func:`impression_metrics`, from ``(y_true, y_score)`` pairs.

    Returns:
        ``auc``, ``mrr``, ``ndcg@5``, ``ndcg@10`` (NaN when no impression counts), ``impressions`` (the
        number averaged) and ``excluded_impressions`` (no click or no non-click).
    """
    rows, excluded = [], 0
    for y_true, y_score in impressions:
        m = impression_metrics(y_true, y_score)
        if m is None:
            excluded += 1
        else:
            rows.append(m)
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in METRICS}
    out["impressions"] = len(rows)
    out["excluded_impressions"] = excluded
    return out


def ranks_from_scores(y_score: Sequence[float]) -> list[int]:
    """1-based rank of each candidate (MIND submission format), ties by :func:`descending_order`."""
    order = descending_order(y_score)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks.tolist()


def report(metrics: dict[str, Any], title: str = "") -> str:
    """A small text table of :func:`ranking_metrics` output (classification_report.txt of this task)."""
    lines = [title] if title else []
    lines += [f"{k:>22}  {metrics[k]:.4f}" for k in METRICS]
    lines += [f"{'impressions':>22}  {metrics['impressions']}",
              f"{'excluded_impressions':>22}  {metrics['excluded_impressions']}"]
    return "\n".join(lines) + "\n"
