"""Sentence pairs for contrastive fine-tuning (``finetune=setfit``), generated from a labelled training set.

Why here and pure: the pairs are data (which two training examples, and whether they share a class), so
they are drawn where the data is, from the labels alone, and tested without a model.

The recipe is SetFit's (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", and the
``setfit`` library's ``ContrastiveDataset``): every unordered pair of training examples, an example with
itself included, is a positive (target similarity 1.0) when both have the same class (multi-label: share
at least one label) and a negative (0.0) otherwise; positives and negatives are each cycled to
``num_iterations * n`` pairs (``n`` training examples) and interleaved, positive first. The shuffle of the
pair list is seeded, so the same (labels, seed) give the same pairs on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.errors import ConfigError

__all__ = ["contrastive_pairs"]


def contrastive_pairs(labels: Sequence[int | Sequence[float]], num_iterations: int, seed: int
                      ) -> list[tuple[int, int, float]]:
    """``2 * num_iterations * len(labels)`` pairs ``(i, j, target)`` of example indices, alternating
    positive (``target`` 1.0) and negative (0.0).

    Args:
        labels: a class id per example, or a multi-hot vector per example (multi-label).
        num_iterations: positive (and negative) pairs per example, SetFit's ``num_iterations`` (20 in the paper).
        seed: seed of the pair shuffle.

    Raises:
        ConfigError: ``num_iterations`` is not a positive integer, or there are no negative pairs (every
            example has the same class): contrastive training needs both kinds.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
        raise ConfigError(f"finetune.adapter.num_iterations must be a positive integer; got {num_iterations!r}")
    n = len(labels)
    multi = n > 0 and not isinstance(labels[0], int | np.integer)
    if multi:
        hot = np.asarray(labels, dtype=bool)  # [n, C]
    else:
        ids = np.asarray(labels, dtype=np.int64)  # [n]
    first, second = np.triu_indices(n)  # every unordered pair, (i, i) included
    order = np.random.RandomState(seed).permutation(len(first))
    first, second = first[order], second[order]
    same = (hot[first] & hot[second]).any(1) if multi else ids[first] == ids[second]
    positives = np.stack([first[same], second[same]], 1)
    negatives = np.stack([first[~same], second[~same]], 1)
    if not len(negatives):
        raise ConfigError("contrastive pairs need examples of at least two classes; the training set has one")
    length = num_iterations * n
    pos = positives[np.arange(length) % len(positives)]
    neg = negatives[np.arange(length) % len(negatives)]
    out: list[tuple[int, int, float]] = []
    for (a, b), (c, d) in zip(pos.tolist(), neg.tolist(), strict=True):
        out.append((a, b, 1.0))
        out.append((c, d, 0.0))
    return out
