"""NER DataModule: CoNLL column files or span-annotated tables in, word-aligned sub-token features out.

Why this shape: the label set is read from the training file (and saved with the model); every tag
scheme is converted to IOB2 on reading, and character spans (doccano, Label Studio, CSV) become IOB2 tags
of BERT-pre-tokenized words (:mod:`~experiments.tasks.ner.spans`); sentences longer than the encoder's
window are split into overlapping windows so every word is predicted and scored (no gold entity is
dropped). A span file without validation and test files (Bitext) is carved into seeded stratified splits
whose ids go to ``split_ids.json``, as the classification family does.
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
from experiments.tasks.ner.spans import SpanOptions, is_span_file, read_span_file
from experiments.tasks.splits import stratified_split, write_split_ids

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
    """NER data (train/validation/test/predict files) for token classification.

    Args:
        tokenizer: fast tokenizer of the encoder.
        train_file, validation_file, test_file: CoNLL column files or span files (absolute paths). With a
            span file for training and neither validation nor test file, the three splits are carved from it.
        predict_file: CoNLL file, span file (its spans are ignored) or plain text, one whitespace-tokenized
            sentence per line.
        labels: label list to use instead of the training file's (predict mode, from a checkpoint).
        token_column, tag_column: 0-based column indexes (negative counts from the end).
        separator: column separator; ``None`` = any whitespace.
        char_digit_tokens: tokens are a character followed by a digit (Weibo NER form).
        scheme: ``auto``, ``iob1``, ``iob2``, ``bioes`` or ``bmes``; converted to IOB2.
        unknown_labels: ``error`` (a tag not seen in training is an error naming file and line) or
            ``O`` (mapped to ``O`` with a warning counting them).
        label_all_tokens: label continuation sub-tokens with the I- form of the word's tag.
        stride: overlap between windows of a long sentence, in sub-tokens.
        input_format: ``auto`` (``.jsonl``/``.json``/``.csv``/``.tsv`` are span files, anything else CoNLL),
            ``conll`` or ``spans``.
        text_column, spans_column, span_label_column, span_start_column, span_end_column, id_column,
            stratify_column, snap_spans: how span files are read (:class:`~experiments.tasks.ner.spans.SpanOptions`).
        split_fractions: train/validation/test fractions of carved splits.
        split_seed: seed of carved splits (:func:`~experiments.tasks.splits.stratified_split`).
        output_dir: where ``split_ids.json`` is written when splits are carved (``None``: not written).
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
        input_format: str = "auto",
        text_column: str = "text",
        spans_column: str | None = None,
        span_label_column: str | None = None,
        span_start_column: str | None = None,
        span_end_column: str | None = None,
        id_column: str | None = None,
        stratify_column: str | None = None,
        snap_spans: bool = False,
        split_fractions: tuple[float, ...] | list[float] = (0.8, 0.1, 0.1),
        split_seed: int = 42,
        output_dir: str | None = None,
        **batching: Any,
    ):
        super().__init__(tokenizer, **batching)
        if input_format not in ("auto", "conll", "spans"):
            raise ConfigError(f"data.input_format must be auto, conll or spans; got {input_format!r}")
        self.input_format = input_format
        self.span_options = SpanOptions(
            text_column=text_column, spans_column=spans_column, label_column=span_label_column,
            start_column=span_start_column, end_column=span_end_column, id_column=id_column,
            stratify_column=stratify_column, snap=bool(snap_spans))
        self.split_fractions = [float(f) for f in split_fractions]
        self.split_seed = int(split_seed)
        self.output_dir = output_dir
        self.split_ids: dict[str, list[str]] = {}
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
        f = self.files
        #: validation and test are carved from a span-annotated training file given alone
        self.carved = self._spans(f["train"]) and not f["validation"] and not f["test"]
        if self.carved:  # the entry point reads ``files`` to see which splits exist
            f["validation"] = f["test"] = f["train"]
        self.read_options = {"token_column": token_column, "tag_column": tag_column,
                             "separator": separator, "char_digit_tokens": char_digit_tokens, "scheme": scheme}
        self.unknown_labels = unknown_labels
        self.label_all_tokens = label_all_tokens
        self.stride = stride
        self._labels = labels
        self.sentences: dict[str, list[Sentence]] = {}
        self._kshot_drawn = False

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

    def _spans(self, path: str | None) -> bool:
        return bool(path) and (self.input_format == "spans" or (self.input_format == "auto" and is_span_file(path)))

    def _read(self, split: str) -> list[Sentence]:
        if split not in self.sentences:
            self._read_file(split)
        if self.k_shot and not self._kshot_drawn and "train" in self.sentences:
            self._kshot_drawn = True
            self._draw_kshot()
        return self.sentences[split]

    def _draw_kshot(self) -> None:
        """Greedy K mentions per entity type from train (and a K-shot dev set from the rest); ids recorded."""
        from experiments.tasks.kshot import kshot_ner_indices

        pool = self.sentences["train"]
        tags = [s.tags for s in pool]
        train = kshot_ner_indices(tags, self.k_shot, self.k_shot_seed)
        self.sentences["train"] = [pool[i] for i in train]
        ids = {"train": [str(pool[i].id if pool[i].id is not None else i) for i in train]}
        if self.k_shot_dev:
            dev = kshot_ner_indices(tags, self.k_shot_dev, self.k_shot_seed + 1, exclude=train)
            self.sentences["validation"] = [pool[i] for i in dev]
            ids["validation"] = [str(pool[i].id if pool[i].id is not None else i) for i in dev]
        self.record_kshot(self.output_dir, ids)

    def _read_file(self, split: str) -> None:
        if split not in self.sentences:
            path = self.files[split]
            if split in ("train", "validation", "test") and self.carved:
                self._carve()
            elif self._spans(path):
                self.sentences[split] = read_span_file(path, self.span_options, labelled=split != "predict")[0]
            elif split == "predict" and not looks_like_conll(path):
                self.sentences[split] = read_plain_text(path)
            else:
                self.sentences[split] = read_conll(path, **self.read_options)

    def _carve(self) -> None:
        """Seeded stratified train/validation/test of the training span file; ids to ``split_ids.json``."""
        sentences, strata = read_span_file(self.files["train"], self.span_options)
        parts = stratified_split(strata, self.split_fractions, seed=self.split_seed)
        for name, indices in zip(("train", "validation", "test"), parts, strict=True):
            self.sentences[name] = [sentences[i] for i in indices]
            self.split_ids[name] = [str(sentences[i].id) for i in indices]
        if self.output_dir:
            write_split_ids(Path(self.output_dir) / "split_ids.json", self.split_ids)
        log.info("carved %s from %s (seed %d, stratified by %s)",
                 ", ".join(f"{k} {len(v)}" for k, v in self.split_ids.items()), self.files["train"],
                 self.split_seed, self.span_options.stratify_column or "entity types")

    def sentences_of(self, split: str) -> list[Sentence]:
        """The sentences of ``split`` (index = ``example_id``), read on first use."""
        return self._read(split)

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
                spans = self._spans(path)
                return {"task": "ner", "file": file_digest(path), "split": split, "labels": self.labels,
                        "tokenizer": fingerprint, "read": self.read_options,
                        "spans": repr(self.span_options) if spans else None,
                        "carve": [self.split_fractions, self.split_seed] if spans and self.carved else None,
                        # A K-shot draw replaces train (and, with k_shot_dev, validation): not the file's features.
                        "kshot": [self.k_shot, self.k_shot_seed, self.k_shot_dev] if self.k_shot else None,
                        "plain_text": split == "predict" and not spans and not looks_like_conll(path),
                        "unknown_labels": self.unknown_labels, "max_length": self.max_length,
                        "stride": self.stride, "label_all_tokens": self.label_all_tokens}

            self.features[split] = cached_features(self.cache_dir, key, encode)
            log.info("%s: %d sentences, %d windows (%s)", split, len(sentences), len(self.features[split]), path)

    def augmented_feature(self, feature: dict, rng: Any) -> dict:
        """Re-encode this epoch's variant of the training sentence (``data.augment``). Sentences longer than
        one window, and variants that would be, keep their original window."""
        if not hasattr(self, "_augment_state"):
            if hasattr(self.augment, "fit"):  # NERAugment learns its pools from the training set
                self.augment.fit([(t.words, t.tags) for t in self.sentences["train"]])
            label2id = {tag: i for i, tag in enumerate(self.labels)}
            self._augment_state = (label2id, b_to_i_map(label2id), self.windows_per_example("train"))
        label2id, b_to_i, windows_of = self._augment_state
        if windows_of[feature["example_id"]] != 1:
            return feature
        s = self.sentences["train"][feature["example_id"]]
        words, tags = self.augment(s.words, s.tags, rng)
        windows = encode_sentence(self.tokenizer, words, [label2id[t] for t in tags], max_length=self.max_length,
                                  stride=self.stride, label_all_tokens=self.label_all_tokens, b_to_i=b_to_i)
        if len(windows) != 1:
            return feature
        return {**windows[0], "example_id": feature["example_id"]}

    def hf_collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
