"""Data augmentation for small training sets, applied on the fly to the training split only.

Why on the fly: every epoch sees other variants of the same few examples, and the variant of example
``i`` in epoch ``e`` is drawn from ``numpy.random.RandomState([seed, e, i])``, so a run is the same on any
machine and a resumed epoch draws the same variants (the datamodule re-encodes the variant in its
training collate; validation, test and predict are never augmented).

* :class:`EDA` (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
  Classification Tasks"): random swap (``swap``: ``max(1, round(swap * n))`` swaps of two random words)
  and random deletion (each word dropped with probability ``delete``; one random word is kept when all
  would go). EDA's synonym replacement and insertion need WordNet data, which this package does not
  carry; they are not offered.
* :class:`NERAugment` (Dai & Adel 2020, "An Analysis of Simple Data Augmentation for Named Entity
  Recognition"): label-wise token replacement (``token_replace``: each token replaced, with that
  probability, by a random training token of the same IOB2 tag) and mention replacement
  (``mention_replace``: each mention replaced, with that probability, by a random training mention of
  the same type, re-tagged ``B-``, ``I-``...). Both keep valid IOB2 and the number and types of mentions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.errors import ConfigError

__all__ = ["EDA", "NERAugment", "mentions"]


def _probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"data.augment.{name} must be a probability in [0, 1]; got {value}")
    return value


class EDA:
    """Random swap and random deletion of words (module docstring) for sentence classification.

    Args:
        swap: fraction of the words swapped (0 = off).
        delete: probability of deleting each word (0 = off).

    Raises:
        ConfigError: a value outside [0, 1].
    """

    def __init__(self, swap: float = 0.1, delete: float = 0.1):
        self.swap = _probability("swap", swap)
        self.delete = _probability("delete", delete)

    def __repr__(self) -> str:
        return f"EDA(swap={self.swap}, delete={self.delete})"

    def __call__(self, text: str, rng: np.random.RandomState) -> str:
        """One variant of ``text`` (words split on whitespace, joined by single spaces)."""
        words = text.split()
        if len(words) > 1 and self.swap > 0:
            for _ in range(max(1, round(self.swap * len(words)))):
                i, j = rng.randint(len(words)), rng.randint(len(words))
                words[i], words[j] = words[j], words[i]
        if len(words) > 1 and self.delete > 0:
            keep = [w for w in words if rng.random_sample() >= self.delete]
            words = keep or [words[rng.randint(len(words))]]
        return " ".join(words)


def mentions(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, end, type)`` of each mention of an IOB2 sequence, end exclusive (conlleval chunks)."""
    out: list[tuple[int, int, str]] = []
    start, typ = None, None
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and typ == tag[2:]
        if start is not None and not inside:
            out.append((start, i, typ))
            start, typ = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not inside):
            start, typ = i, tag[2:]
    return out


class NERAugment:
    """Label-wise token replacement and mention replacement (module docstring); :meth:`fit` on train first.

    Args:
        token_replace: probability of replacing each token by a training token of the same tag.
        mention_replace: probability of replacing each mention by a training mention of the same type.

    Raises:
        ConfigError: a value outside [0, 1].
    """

    def __init__(self, token_replace: float = 0.0, mention_replace: float = 0.3):
        self.token_replace = _probability("token_replace", token_replace)
        self.mention_replace = _probability("mention_replace", mention_replace)
        self.tokens: dict[str, list[str]] = {}
        self.mentions: dict[str, list[list[str]]] = {}

    def __repr__(self) -> str:
        return f"NERAugment(token_replace={self.token_replace}, mention_replace={self.mention_replace})"

    def fit(self, sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> NERAugment:
        """Collect the training tokens per tag and mentions per type from ``(words, tags)`` pairs."""
        tokens: dict[str, set[str]] = {}
        found: dict[str, set[tuple[str, ...]]] = {}
        for words, tags in sentences:
            for w, t in zip(words, tags, strict=True):
                tokens.setdefault(t, set()).add(w)
            for a, b, typ in mentions(tags):
                found.setdefault(typ, set()).add(tuple(words[a:b]))
        # Sorted: the pools, hence the draws, do not depend on set order (Python's string hashing is salted).
        self.tokens = {t: sorted(ws) for t, ws in tokens.items()}
        self.mentions = {typ: [list(m) for m in sorted(ms)] for typ, ms in found.items()}
        return self

    def __call__(self, words: Sequence[str], tags: Sequence[str], rng: np.random.RandomState
                 ) -> tuple[list[str], list[str]]:
        """One variant ``(words, tags)`` of a sentence."""
        words, tags = list(words), list(tags)
        if self.token_replace > 0:
            for i, t in enumerate(tags):
                pool = self.tokens.get(t)
                if pool and rng.random_sample() < self.token_replace:
                    words[i] = pool[rng.randint(len(pool))]
        if self.mention_replace > 0:
            out_w: list[str] = []
            out_t: list[str] = []
            pos = 0
            for a, b, typ in mentions(tags):
                out_w += words[pos:a]
                out_t += tags[pos:a]
                pool = self.mentions.get(typ)
                new = pool[rng.randint(len(pool))] if pool and rng.random_sample() < self.mention_replace else words[a:b]
                out_w += new
                out_t += [f"B-{typ}"] + [f"I-{typ}"] * (len(new) - 1)
                pos = b
            words, tags = out_w + words[pos:], out_t + tags[pos:]
        return words, tags
