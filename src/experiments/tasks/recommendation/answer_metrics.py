"""Answer-selection metrics: recall@k, MRR, R10@1 and intent-match@1, averaged over messages.

Definitions (each message has exactly one gold answer in a pool of ``P`` candidates):

* rank of the gold answer: ``1 + #(candidates scoring higher) + #(other candidates scoring the same)``.
  Ties rank the gold answer *last* among its equals, so a constant scorer gets rank ``P``, never 1
  (an optimistic rule would reward a model that outputs the same score for everything).
* recall@k: the fraction of messages whose gold rank is ``<= k`` (Manning et al., "Introduction to
  Information Retrieval", 2008, ch. 8); MRR: the mean of ``1 / rank`` (Voorhees, TREC-8 QA, 1999).
* R10@1 (Lowe et al., "The Ubuntu Dialogue Corpus", SIGDIAL 2015): the gold answer against 9 random
  negatives of the pool; a hit when its score is strictly above all 9 (a tie is a miss, as above).
* intent-match@1: the top-scored candidate was written for the message's intent (Bitext's answers of one
  intent are often near-paraphrases, so recall@1 alone undersells a model that picks a sibling answer).
  The top candidate is the first of the highest scores in pool order.

No sort is used anywhere, so the result cannot depend on a sort kernel's order of ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ANSWER_METRICS = ("recall@1", "recall@5", "mrr", "r10@1", "intent_match@1")


def gold_ranks(scores: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    """1-based rank of each message's gold answer (ties: gold last).

    Args:
        scores: ``[M, P]`` scores of every candidate for every message (higher = better).
        gold: ``M`` indices into the pool.

    Returns:
        ``[M]`` int64 ranks in ``1..P``.

    Raises:
        ValueError: shapes disagree, a gold index is out of range, or a score is NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gold, dtype=np.int64)
    if s.ndim != 2 or s.shape[0] != len(g):
        raise ValueError(f"scores must be [messages, pool] with one gold per message; got {s.shape} and {len(g)}")
    if len(g) and (g.min() < 0 or g.max() >= s.shape[1]):
        raise ValueError("a gold index is outside the pool")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    own = s[np.arange(len(g)), g][:, None]
    return 1 + (s > own).sum(1) + (s == own).sum(1) - 1


def answer_selection_metrics(scores: np.ndarray, gold: Sequence[int], *, pool_intents: Sequence[str],
                             message_intents: Sequence[str], r10_scores: np.ndarray | None = None
                             ) -> dict[str, Any]:
    """The metrics of the module docstring, averaged over messages.

    Args:
        scores: ``[M, P]`` ranking scores over the whole pool.
        gold: ``M`` gold pool indices.
        pool_intents: ``P`` intents of the pool's answers; message_intents: ``M`` intents of the messages.
        r10_scores: ``[M, 10]`` scores of the gold answer (column 0) and its 9 negatives; ``None`` leaves
            ``r10@1`` out (pool smaller than 10).

    Returns:
        ``{"recall@1", "recall@5", "mrr", "r10@1", "intent_match@1", "messages", "pool"}``.

    Raises:
        ValueError: no message, or see :func:`gold_ranks`.
    """
    ranks = gold_ranks(scores, gold)
    if not len(ranks):
        raise ValueError("no message to score")
    s = np.asarray(scores, dtype=np.float64)
    top = s.argmax(1)  # first maximum in pool order
    out: dict[str, Any] = {
        "recall@1": float((ranks <= 1).mean()),
        "recall@5": float((ranks <= 5).mean()),
        "mrr": float((1.0 / ranks).mean()),
        "intent_match@1": float(np.mean([pool_intents[t] == m for t, m in zip(top, message_intents, strict=True)])),
        "messages": int(len(ranks)),
        "pool": int(s.shape[1]),
    }
    if r10_scores is not None:
        r = np.asarray(r10_scores, dtype=np.float64)
        out["r10@1"] = float((r[:, 0] > r[:, 1:].max(1)).mean())
    return out


def report(metrics: dict[str, Any], title: str = "") -> str:
    """A small text table of :func:`answer_selection_metrics` output."""
    lines = [title] if title else []
    lines += [f"{k:>16}  {metrics[k]:.4f}" for k in ANSWER_METRICS if k in metrics]
    lines += [f"{'messages':>16}  {metrics['messages']}", f"{'pool':>16}  {metrics['pool']}"]
    return "\n".join(lines) + "\n"
