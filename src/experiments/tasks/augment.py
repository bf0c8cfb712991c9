"""Data augmentation for small training sets, applied on the fly to the training split only.

Why on the fly: every epoch sees other variants of the same few examples, and the variant of example
``i`` in epoch ``e`` is drawn from ``numpy.random.RandomState([seed, e, i])``, so a run is the same on any
machine and a resumed epoch draws the same variants (the datamodule re-encodes the variant in its
training collate; validation, test and predict are never augmented).

* :class:`EDA` (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
  Classification Tasks"): random swap (``swap``: ``max(1, round(swap * n))`` swaps of two random words)
  and random deletion (each word dropped with probability ``delete``; one random word is kept when all
  would go), and, when a thesaurus is at hand, EDA's synonym replacement (``synonym``) and random insertion
  (``insert``). Their synonyms come from WordNet through nltk (optional: ``pip install nltk`` and
  ``python -m nltk.downloader wordnet``; this package carries no WordNet data) or from a JSON file
  ``{word: [synonyms]}`` (``thesaurus``), e.g. a domain's own; stop words (scikit-learn's English list,
  as EDA skips stop words) are never replaced.
* :class:`NERAugment` (Dai & Adel 2020, "An Analysis of Simple Data Augmentation for Named Entity
  Recognition"): label-wise token replacement (``token_replace``: each token replaced, with that
  probability, by a random training token of the same IOB2 tag) and mention replacement
  (``mention_replace``: each mention replaced, with that probability, by a random training mention of
  the same type, re-tagged ``B-``, ``I-``...). Both keep valid IOB2 and the number and types of mentions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from experiments.errors import ConfigError, DataError

__all__ = ["EDA", "NERAugment", "mentions", "read_thesaurus", "wordnet_synonyms"]


def _probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"data.augment.{name} must be a probability in [0, 1]; got {value}")
    return value


class EDA:
    """EDA (module docstring) for sentence classification: swap and deletion always, synonym replacement
    and insertion when a thesaurus is configured.

    Args:
        swap: fraction of the words swapped (0 = off).
        delete: probability of deleting each word (0 = off).
        synonym: EDA's ``alpha_sr``: ``max(1, round(synonym * n))`` distinct non-stop words replaced (all
            their occurrences) by a random synonym (0 = off).
        insert: EDA's ``alpha_ri``: ``max(1, round(insert * n))`` synonyms of random words inserted at
            random positions (0 = off).
        thesaurus: a JSON file ``{word: [synonym, ...]}``; ``None``: WordNet through nltk. Read only when
            ``synonym`` or ``insert`` is on.

    Raises:
        ConfigError: a value outside [0, 1], or synonym operations asked for with no thesaurus (nltk or
            its WordNet data missing).
        DataError: a thesaurus file that is not a JSON object of word -> list of strings.
    """

    def __init__(self, swap: float = 0.1, delete: float = 0.1, synonym: float = 0.0, insert: float = 0.0,
                 thesaurus: str | None = None):
        self.swap = _probability("swap", swap)
        self.delete = _probability("delete", delete)
        self.synonym = _probability("synonym", synonym)
        self.insert = _probability("insert", insert)
        self.thesaurus = thesaurus
        self.synonyms: Callable[[str], Sequence[str]] | None = None
        if self.synonym > 0 or self.insert > 0:
            self.synonyms = read_thesaurus(thesaurus) if thesaurus else wordnet_synonyms()

    def __repr__(self) -> str:
        extra = (f", synonym={self.synonym}, insert={self.insert}, thesaurus={self.thesaurus or 'wordnet'}"
                 if self.synonyms else "")
        return f"EDA(swap={self.swap}, delete={self.delete}{extra})"

    def __call__(self, text: str, rng: np.random.RandomState) -> str:
        """One variant of ``text`` (words split on whitespace, joined by single spaces): synonym
        replacement, insertion, swap, deletion, in that order, each only when on."""
        words = text.split()
        if words and self.synonym > 0:
            words = self._replace(words, max(1, round(self.synonym * len(words))), rng)
        if words and self.insert > 0:
            words = self._insert(words, max(1, round(self.insert * len(words))), rng)
        if len(words) > 1 and self.swap > 0:
            for _ in range(max(1, round(self.swap * len(words)))):
                i, j = rng.randint(len(words)), rng.randint(len(words))
                words[i], words[j] = words[j], words[i]
        if len(words) > 1 and self.delete > 0:
            keep = [w for w in words if rng.random_sample() >= self.delete]
            words = keep or [words[rng.randint(len(words))]]
        return " ".join(words)

    def _candidates(self, word: str) -> list[str]:
        if word.lower() in stop_words():
            return []
        return [s for s in self.synonyms(word) if s.lower() != word.lower()]

    def _replace(self, words: list[str], n: int, rng: np.random.RandomState) -> list[str]:
        unique = sorted(set(words))
        replaced = 0
        for k in rng.permutation(len(unique)):
            options = self._candidates(unique[k])
            if options:
                new = options[rng.randint(len(options))]
                words = [new if w == unique[k] else w for w in words]
                replaced += 1
                if replaced == n:
                    break
        return " ".join(words).split()

    def _insert(self, words: list[str], n: int, rng: np.random.RandomState) -> list[str]:
        words = list(words)
        for _ in range(n):
            for _attempt in range(10):  # as EDA: give up on this insertion after 10 words without synonyms
                options = self._candidates(words[rng.randint(len(words))])
                if options:
                    words[rng.randint(len(words) + 1):0] = options[rng.randint(len(options))].split()
                    break
        return words


@functools.cache
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words (imported on first use: scikit-learn is slow to import)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def read_thesaurus(path: str | Path) -> Callable[[str], list[str]]:
    """The synonyms of a JSON thesaurus ``{word: [synonym, ...]}`` (looked up as given, then lowercased).

    Raises:
        DataError: the file is missing, not JSON, or not an object of word -> list of strings.
    """
    path = Path(path).expanduser()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, "thesaurus file not found (data.augment.thesaurus)") from None
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, f"not JSON ({err.msg}); expected {{word: [synonyms]}}") from None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in table.values()):
        raise DataError(path, None, "expected a JSON object of word -> list of synonym strings")
    table = {**{k.lower(): v for k, v in table.items()}, **table}
    return lambda word: list(table.get(word, table.get(word.lower(), [])))


def wordnet_synonyms() -> Callable[[str], Sequence[str]]:
    """The WordNet synonyms of a word (lemma names of all its synsets, ``_`` as space), through nltk.

    Raises:
        ConfigError: nltk or its WordNet data is not installed.
    """
    hint = ("data.augment.synonym / insert need a thesaurus: pip install nltk && python -m nltk.downloader "
            "wordnet, or data.augment.thesaurus=<JSON file {word: [synonyms]}>")
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("good")
    except (ImportError, LookupError, OSError):
        raise ConfigError(hint) from None

    @functools.cache  # the training collate asks again for the same words every epoch
    def synonyms(word: str) -> tuple[str, ...]:
        names = {lemma.name().replace("_", " ") for syn in wordnet.synsets(word) for lemma in syn.lemmas()}
        return tuple(sorted(names))

    return synonyms


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
