"""K-shot training sets: seeded, nested draws of K examples per class (or K mentions per entity type).

Why: with 8 or 16 labelled examples per class, which examples were drawn decides the score as much as the
method does (Gao et al. 2021, LM-BFF, report means over 5 draws for that reason). So a draw must be
reproducible on any machine, recorded, and comparable across K.

* Classification (:func:`kshot_indices`): for each class (visited in ``str`` order) its indices in file
  order are permuted by ``numpy.random.RandomState([seed, h])`` (``h``: the first 4 bytes of SHA-256 of
  ``str(label)``, little-endian; the legacy stream is frozen by NumPy's policy) and the first
  ``min(K, n_c)`` are taken. A class's draw depends only on its own examples and the seed, and the
  K=8 draw is a prefix of the K=16 draw. Multi-label data: a class is an exact label set.
* Development set (``k_shot_dev``, LM-BFF's protocol): the next ``K_dev`` of each class in the same
  permutation, so it is disjoint from the training draw.
* NER (:func:`kshot_ner_indices`): greedy sampling (Yang & Katiyar 2020, "Simple and Effective Few-Shot
  NER with Structured Nearest Neighbor Learning", appendix): sentences are visited in the order of
  ``RandomState(seed).permutation``, and a sentence is taken when some entity type it mentions has fewer
  than K mentions so far. Every type ends with at least ``min(K, its mentions)`` mentions; unlike the
  classification draw, two values of K are not always nested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from experiments.tasks.splits import class_seed

__all__ = ["kshot_indices", "kshot_ner_indices", "entity_types"]


def _class_order(labels: Sequence[Hashable], seed: int) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    out = {}
    for label in sorted(groups, key=str):
        idx = np.asarray(groups[label], dtype=np.int64)
        out[label] = idx[np.random.RandomState(class_seed(seed, label)).permutation(len(idx))].tolist()
    return out


def _check(k: int, seed: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"K must be a positive integer; got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")


def kshot_indices(labels: Sequence[Hashable], k: int, seed: int, *, dev: int = 0) -> tuple[list[int], list[int]]:
    """``(train, dev)`` indices: ``min(k, n_c)`` per class, then the next ``min(dev, n_c - k)`` (module docstring).

    Args:
        labels: one label (or tuple of labels) per example.
        k: examples per class (K).
        seed: the draw's seed, in ``[0, 2**32)``.
        dev: development examples per class, disjoint from the training draw (0: none).

    Returns:
        Two sorted lists of indices into ``labels``.

    Raises:
        ValueError: ``k`` is not a positive integer, ``dev`` is negative, or ``seed`` is out of range.
    """
    _check(k, seed)
    if isinstance(dev, bool) or not isinstance(dev, int) or dev < 0:
        raise ValueError(f"dev must be an integer >= 0; got {dev!r}")
    train, held = [], []
    for order in _class_order(labels, seed).values():
        train += order[:k]
        held += order[k:k + dev]
    return sorted(train), sorted(held)


def entity_types(tags: Iterable[str]) -> Counter:
    """Mentions per entity type in one IOB2 tag sequence (a mention starts with ``B-``, or ``I-`` after another type)."""
    out: Counter = Counter()
    previous = "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            out[tag[2:]] += 1
        previous = tag if tag != "O" else "O"
    return out


def kshot_ner_indices(tags: Sequence[Sequence[str]], k: int, seed: int, *,
                      exclude: Iterable[int] = ()) -> list[int]:
    """Greedy K-shot sentence draw for NER (module docstring); sentences in ``exclude`` are never taken.

    Returns:
        Sorted indices of the chosen sentences.

    Raises:
        ValueError: see :func:`kshot_indices`.
    """
    _check(k, seed)
    skip = set(exclude)
    counts: Counter = Counter()
    chosen = []
    for i in np.random.RandomState(seed).permutation(len(tags)).tolist():
        if i in skip:
            continue
        mentions = entity_types(tags[i])
        if any(counts[t] < k for t in mentions):
            chosen.append(i)
            counts.update(mentions)
    return sorted(chosen)
