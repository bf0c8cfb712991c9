"""Reproducible, stratified train/validation/test splits of data sets that ship without one, and their record.

Why one module: classification, NER from span annotations and answer selection all carve splits from one
file (Bitext has no split), and when they carve the same rows with the same seed and the same strata they
must agree, so that the intent, slot and answer models of one assistant are all tested on the same messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["stratified_split", "write_split_ids"]

PathLike = str | os.PathLike[str]


def _check_fractions(fractions: Sequence[float]) -> list[Fraction]:
    values = list(fractions)
    if len(values) < 2:
        raise ValueError(f"fractions needs at least 2 entries (train, validation[, test]); got {values!r}")
    if any(
        isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f) or f < 0 for f in values
    ):
        raise ValueError(f"fractions must be finite numbers >= 0; got {values!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1; got {values!r} (sum {sum(values)})")
    exact = [Fraction(f).limit_denominator(1_000_000) for f in values]
    total = sum(exact)
    return [f / total for f in exact]


def class_seed(seed: int, label: Any) -> list[int]:
    """``[seed, h]``, ``h`` the first 4 bytes of SHA-256 of ``str(label)`` read little-endian: the
    ``RandomState`` seed of one class, the same on every machine (never Python's salted ``hash()``)."""
    digest = hashlib.sha256(str(label).encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:4], "little")]


def _allocate(n: int, fr: Sequence[Fraction], deficit: Sequence[Fraction]) -> list[int]:
    """Split ``n`` into per-split counts: largest remainder, ties to the split furthest behind, min 1."""
    k = len(fr)
    quotas = [n * f for f in fr]
    counts = [math.floor(q) for q in quotas]
    leftover = n - sum(counts)
    order = sorted(range(k), key=lambda s: (-(quotas[s] - counts[s]), -deficit[s], s))
    for s in order[:leftover]:
        counts[s] += 1
    positive = [s for s in range(k) if fr[s] > 0]
    if n >= len(positive):
        for s in positive:
            if counts[s] == 0:
                donor = max(
                    (d for d in range(k) if counts[d] >= 2),
                    key=lambda d: (counts[d] - quotas[d], counts[d], -d),
                )
                counts[donor] -= 1
                counts[s] += 1
    return counts


def stratified_split(
    labels: Sequence[Any],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> tuple[list[int], ...]:
    """Split indices ``0..len(labels)-1`` into stratified, disjoint parts, identically on every machine.

    Definition (all of it; nothing else influences the result):

    1. Group the indices by label; visit the classes sorted by ``str(label)``.
    2. Per class of size ``n``: each split ``s`` gets ``floor(n * fractions[s])``; the ``n - sum`` units
       left go one each to the splits with the largest remainder ``n * fractions[s] - floor(...)``
       (largest-remainder rounding, so the counts sum to ``n`` exactly); equal remainders go to the split
       furthest below its running target, ``(size of the classes visited before) * fractions[s]`` minus
       what the split already holds, then to the earlier split. This keeps the split totals close to
       ``N * fractions`` instead of always favouring validation over test.
    3. If ``n`` is at least the number of splits with a fraction > 0, every such split gets at least one
       example of the class: an empty split takes one from the split with the most surplus over its quota
       (ties: the larger count, then the earlier split) among those holding 2 or more. With
       (0.8, 0.1, 0.1), every class with 3 or more examples is in all three splits.
    4. The class's indices, ascending, are permuted by
       ``numpy.random.RandomState([seed, h]).permutation(n)`` with ``h`` the first 4 bytes of
       SHA-256 of ``str(label)`` read little-endian (the legacy ``RandomState`` stream is frozen by
       NumPy's compatibility policy); the first ``counts[0]`` go to split 0, the next to split 1, etc.
       A class's membership thus depends only on its own indices, the seed and the counts.

    Multi-label data can be passed as tuples: classes are then the exact label sets.

    Args:
        labels: one label per example.
        fractions: 2 (train, validation) or more fractions >= 0 summing to 1.
        seed: integer in ``[0, 2**32)``.

    Returns:
        One sorted list of indices per fraction, disjoint and together covering every index.

    Raises:
        ValueError: fewer than 2 fractions, a negative or non-finite fraction, a sum other than 1 (within
            1e-6), or a seed outside ``[0, 2**32)``.
    """
    fr = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")
    seed = int(seed)
    groups: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    k = len(fr)
    splits: list[list[int]] = [[] for _ in range(k)]
    allocated = [0] * k
    seen = 0
    for label in sorted(groups, key=str):
        indices = np.asarray(groups[label], dtype=np.int64)
        n = len(indices)
        deficit = [seen * fr[s] - allocated[s] for s in range(k)]
        counts = _allocate(n, fr, deficit)
        seen += n
        shuffled = indices[np.random.RandomState(class_seed(seed, label)).permutation(n)]
        start = 0
        for s, count in enumerate(counts):
            splits[s].extend(int(i) for i in shuffled[start : start + count])
            start += count
            allocated[s] += count
    return tuple(sorted(part) for part in splits)


def write_split_ids(path: PathLike, splits: Mapping[str, Sequence[str]]) -> None:
    """Write the example ids of each split as JSON, atomically.

    The file is ``{"train": ["12", ...], "validation": [...], ...}`` (keys and order as given), written
    to a temporary file in the same folder and moved over ``path`` with :func:`os.replace`, so a reader
    never sees a half-written file. Missing parent folders are created.

    Args:
        path: destination ``.json`` file.
        splits: split name -> example ids (strings, e.g. :attr:`Example.id`).

    Returns:
        None.

    Raises:
        ValueError: a split name or id is not a string, or an id occurs twice (within or across splits).
        OSError: the file cannot be written.

    Format source: defined here (this project's split record; read it back with :func:`json.load`).
    """
    payload: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        if not isinstance(name, str):
            raise ValueError(f"split names must be strings; got {name!r}")
        payload[name] = []
        for example_id in ids:
            if not isinstance(example_id, str):
                raise ValueError(f"ids must be strings; got {example_id!r} in split {name!r}")
            if example_id in owner:
                raise ValueError(f"id {example_id!r} is in split {owner[example_id]!r} and again in {name!r}")
            owner[example_id] = name
            payload[name].append(example_id)
    from experiments.reporting import write_text

    write_text(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
