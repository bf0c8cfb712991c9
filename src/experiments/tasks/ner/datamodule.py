"""NER DataModule: CoNLL column files in, word-aligned sub-token features out.

Why this shape: the label set is read from the training file (and saved with the model); every tag
scheme is converted to IOB2 on reading; sentences longer than the encoder's window are split into
overlapping windows so every word is predicted and scored (no gold entity is dropped).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, DataError
from experiments.tasks.base import (
    STAGE_SPLITS,
    FeaturesDataModule,
    cached_features,
    file_digest,
    tokenizer_fingerprint,
)
from experiments.tasks.io import read_input_bytes
from experiments.tasks.ner.conll import SCHEMES, Sentence, check_labels, label_list, read_conll
from experiments.tasks.ner.encoding import b_to_i_map, encode_sentence

log = logging.getLogger(__name__)


def complete_iob2(labels: list[str]) -> list[str]:
    """Add ``I-X`` for every ``B-X`` the training file had without it (``label_all_tokens`` needs it)."""
    out = list(labels)
    for tag in labels:
        if tag.startswith("B-") and f"I-{tag[2:]}" not in out:
            out.append(f"I-{tag[2:]}")
    return out


def read_plain_text(path: str | Path) -> list[Sentence]:
    """One sentence per line, whitespace-tokenized; blank lines are skipped. Tags are all ``O``.

    Raises:
        DataError: the file is missing, holds NUL bytes (binary or UTF-16), is not UTF-8 or has no
            non-blank line.
    """
    data = read_input_bytes(path, "UTF-8 text, one sentence per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(path, line, "not UTF-8 text; expected one UTF-8 sentence per line") from None
    sentences = [
        Sentence(words=words, tags=["O"] * len(words), line=i)
        for i, raw in enumerate(text.splitlines(), start=1)
        if (words := raw.split())
    ]
    if not sentences:
        raise DataError(path, None, "no sentences; expected one whitespace-tokenized sentence per line")
    return sentences


_TAG = re.compile(r"^(O|[BIESMLU]-\S+)$")


def looks_like_conll(path: str | Path) -> bool:
    """True when the first 200 non-blank lines all have a token and a tag-like last column (``O``, ``B-X``...).

    False when the file cannot be opened: the plain-text reader then reports it as a :class:`DataError`.
    """
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            lines = [ln.split() for ln in (next(fh, "") for _ in range(200)) if ln.strip()]
    except OSError:
        return False
    return bool(lines) and all(len(f) >= 2 and (f[0] == "-DOCSTART-" or _TAG.match(f[-1])) for f in lines)


class NERDataModule(FeaturesDataModule):
    """CoNLL-format NER data (train/validation/test/predict files) for token classification.

    Args:
        tokenizer: fast tokenizer of the encoder.
        train_file, validation_file, test_file: CoNLL column files (absolute paths).
        predict_file: CoNLL file or plain text, one whitespace-tokenized sentence per line.
        labels: label list to use instead of the training file's (predict mode, from a checkpoint).
        token_column, tag_column: 0-based column indexes (negative counts from the end).
        separator: column separator; ``None`` = any whitespace.
        char_digit_tokens: tokens are a character followed by a digit (Weibo NER form).
        scheme: ``auto``, ``iob1``, ``iob2``, ``bioes`` or ``bmes``; converted to IOB2.
        unknown_labels: ``error`` (a tag not seen in training is an error naming file and line) or
            ``O`` (mapped to ``O`` with a warning counting them).
        label_all_tokens: label continuation sub-tokens with the I- form of the word's tag.
        stride: overlap between windows of a long sentence, in sub-tokens.
        **batching: see ``FeaturesDataModule``.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        *,
        labels: list[str] | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        separator: str | None = None,
        char_digit_tokens: bool = False,
        scheme: str = "auto",
        unknown_labels: str = "error",
        label_all_tokens: bool = False,
        stride: int = 32,
        **batching: Any,
    ):
        super().__init__(tokenizer, **batching)
        if unknown_labels not in ("error", "O"):
            raise ConfigError(f"data.unknown_labels must be 'error' or 'O', got {unknown_labels!r}")
        if scheme not in ("auto", *SCHEMES):
            raise ConfigError(f"data.scheme must be auto, {', '.join(SCHEMES)}; got {scheme!r}")
        if separator is not None and (not separator or "\n" in separator):
            raise ConfigError(
                f"data.separator must be null or a non-empty string without newline; got {separator!r}"
            )
        self.files = {"train": train_file, "validation": validation_file, "test": test_file,
                      "predict": predict_file}
        self.read_options = {"token_column": token_column, "tag_column": tag_column,
                             "separator": separator, "char_digit_tokens": char_digit_tokens, "scheme": scheme}
        self.unknown_labels = unknown_labels
        self.label_all_tokens = label_all_tokens
        self.stride = stride
        self._labels = labels
        self.sentences: dict[str, list[Sentence]] = {}

    @property
    def labels(self) -> list[str]:
        """Label names, index = class id: the training file's IOB2 tags, ``O`` first (or the list given)."""
        if self._labels is None:
            if not self.files["train"]:
                raise ConfigError("no labels: set data.train_file (or predict from a checkpoint)")
            self._labels = complete_iob2(label_list(self._read("train")))
        return self._labels

    def use_labels(self, labels: list[str]) -> None:
        """Use ``labels`` (the same set in another order, e.g. a fine-tuned model's ``id2label``).

        Raises:
            ConfigError: ``labels`` is not the same set as :attr:`labels`, or features were already built.
        """
        if set(labels) != set(self.labels) or len(labels) != len(self.labels):
            raise ConfigError(f"label order {labels} is not a permutation of the data's labels {self.labels}")
        if self.features:
            raise ConfigError("use_labels() must be called before setup()")
        self._labels = list(labels)

    def _read(self, split: str) -> list[Sentence]:
        if split not in self.sentences:
            path = self.files[split]
            if split == "predict" and not looks_like_conll(path):
                self.sentences[split] = read_plain_text(path)
            else:
                self.sentences[split] = read_conll(path, **self.read_options)
        return self.sentences[split]

    def gold_tags(self, split: str) -> list[list[str]]:
        """Word-level IOB2 gold tags of ``split`` as in the file, index = ``example_id`` (tags unseen in
        training are kept: with ``unknown_labels=O`` they count as misses, see :meth:`unseen_types`)."""
        return [s.tags for s in self._read(split)]

    def unseen_types(self, split: str) -> list[str]:
        """Entity types of ``split``'s gold tags that are not in :attr:`labels`."""
        known = set(self.labels)
        return sorted({t[2:] for s in self._read(split) for t in s.tags if t not in known and t[:2] in ("B-", "I-")})

    def words(self, split: str) -> list[list[str]]:
        return [s.words for s in self._read(split)]

    def windows_per_example(self, split: str) -> list[int]:
        """Number of encoded windows of each sentence of ``split`` (index = ``example_id``)."""
        counts = [0] * len(self._read(split))
        for f in self.features[split]:
            counts[f["example_id"]] += 1
        return counts

    def setup(self, stage: str | None = None) -> None:
        """Read and encode the splits that ``stage`` uses (``tasks.base.STAGE_SPLITS``: fit reads train,
        validation and test; None: every configured split), so that test and predict runs read no
        training file."""
        label2id = {tag: i for i, tag in enumerate(self.labels)}
        b_to_i = b_to_i_map(label2id)
        fingerprint = tokenizer_fingerprint(self.tokenizer) if self.cache_dir else None  # once, for the cache
        for split in STAGE_SPLITS.get(stage, tuple(self.files)):
            path = self.files[split]
            if not path or split in self.features:
                continue
            sentences = self._read(split)
            with_labels = split != "predict"
            if with_labels:
                # Unseen tags become O in the training targets only; the gold (gold_tags) keeps them.
                sentences, replaced = check_labels(sentences, label2id, path, unknown=self.unknown_labels)
                if replaced:
                    log.warning("%s: %d tags unseen in training were mapped to O in the targets; they stay in "
                                "the gold and count as misses", path, replaced)

            def encode(sentences: list[Sentence] = sentences, with_labels: bool = with_labels) -> list[dict]:
                feats = []
                for i, s in enumerate(sentences):
                    ids = [label2id[t] for t in s.tags] if with_labels else None
                    for f in encode_sentence(self.tokenizer, s.words, ids, max_length=self.max_length,
                                             stride=self.stride, label_all_tokens=self.label_all_tokens,
                                             b_to_i=b_to_i):
                        f["example_id"] = i
                        feats.append(f)
                return feats

            def key(split: str = split, path: str = path) -> dict[str, Any]:
                return {"task": "ner", "file": file_digest(path), "split": split, "labels": self.labels,
                        "tokenizer": fingerprint, "read": self.read_options,
                        "plain_text": split == "predict" and not looks_like_conll(path),
                        "unknown_labels": self.unknown_labels, "max_length": self.max_length,
                        "stride": self.stride, "label_all_tokens": self.label_all_tokens}

            self.features[split] = cached_features(self.cache_dir, key, encode)
            log.info("%s: %d sentences, %d windows (%s)", split, len(sentences), len(self.features[split]), path)

    def hf_collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
