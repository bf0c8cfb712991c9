"""Sequence-classification DataModule: :class:`Example` records in, padded token-id batches out.

Why one class: every data set here ends up as the same thing, lists of
:class:`~experiments.tasks.classification.readers.Example` per split, so tokenization, label mapping,
split carving and batching are written once; a source (:mod:`~experiments.tasks.classification.sources`,
chosen by Hydra as ``data.source``) only says how to read its files and carries its own options. Adding a
data set in an existing format is one YAML file in ``conf/dataset``.

Label list: the sorted set of training labels (``labels`` given = test/predict mode: that list is used and
the training file is not read for labels). A validation or test label outside it is a
:class:`~experiments.errors.DataError` naming the file and row. Out-of-scope mode ``oos="threshold"``:
examples labelled ``oos_label`` are dropped from train, so the model never learns the class, and kept in
validation/test with the extra class id ``len(labels)`` (see :attr:`eval_labels`).

Carved splits are seeded (``split_seed``) and stratified (:func:`readers.stratified_split`); their example
ids are written to ``<output_dir>/split_ids.json``. With a label list *and* a ``predict_file`` (predict
mode) only the predict file is read, so predicting never needs the training data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from experiments.errors import ConfigError, DataError
from experiments.tasks.base import SPLITS, STAGE_SPLITS, FeaturesDataModule
from experiments.tasks.classification import readers
from experiments.tasks.classification.readers import Example

log = logging.getLogger(__name__)

OOS_MODES = (None, "class", "threshold", "exclude")
_VALIDATION_NAMES = ("validation", "valid", "val", "dev")


def read_plain_lines(path: str | Path) -> list[Example]:
    """One text per non-blank line (a ``.txt`` predict file); ids are line numbers."""
    text = readers.read_text_file(path)
    examples = [
        Example(text=line.strip(), label=None, id=str(number), line=number)
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    if not examples:
        raise DataError(path, None, "no texts; expected one text per line")
    return examples


def examples_from_rows(
    rows: Iterable[dict[str, Any]],
    *,
    where: str,
    text_column: str,
    label_column: str | None,
    text_pair_column: str | None = None,
    label_names: Sequence[str] | None = None,
    multi_label: bool = False,
) -> list[Example]:
    """Examples from dict rows (a Hugging Face ``datasets`` split); integer labels map to ``label_names``.

    Raises:
        DataError: a missing column or empty text, naming ``where`` and the 1-based row.
    """

    def name(value: Any, row: int) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and label_names is not None:
            if not 0 <= value < len(label_names):
                raise DataError(where, row, f"label id {value} outside the {len(label_names)} class names")
            return str(label_names[value])
        return str(value).strip()

    out = []
    for i, row in enumerate(rows, start=1):
        for column in (text_column, label_column, text_pair_column):
            if column is not None and column not in row:
                raise DataError(where, i, f"no column {column!r}; columns found: {', '.join(map(repr, row))}")
        text = str(row[text_column] or "").strip()
        if not text:
            raise DataError(where, i, f"empty text in {text_column!r}; expected the text to classify")
        pair = str(row[text_pair_column]).strip() if text_pair_column else None
        label: str | tuple[str, ...] | None = None
        if label_column is not None:
            value = row[label_column]
            if multi_label:
                values = value if isinstance(value, list | tuple) else [value]
                label = tuple(dict.fromkeys(name(v, i) for v in values if name(v, i)))
            else:
                label = name(value, i)
        out.append(Example(text=text, label=label, text_pair=pair, id=str(row.get("id", i)), line=i))
    return out


class TextClassificationDataModule(FeaturesDataModule):
    """Single- or multi-label text (or text-pair) classification for ``AutoModelForSequenceClassification``.

    Args:
        tokenizer: the encoder's fast tokenizer.
        source: a :class:`~experiments.tasks.classification.sources.Source` (``data.source._target_``) or the
            name of one with its defaults (``table``, ``phrasebank``, ``fiqa``, ``banking77``, ``clinc150``,
            ``bitext``).
        train_file, validation_file, test_file: data files (absolute paths; meaning per source).
        predict_file: texts to label: a ``.txt`` file (one text per line) or a table with
            ``text_column`` (and ``text_pair_column``).
        labels: label list to use instead of the training labels (test/predict mode, from a checkpoint).
        output_dir: where ``split_ids.json`` is written when splits are carved (``None``: not written).
        text_column, text_pair_column, label_column, id_column, multi_label, label_delimiter, format:
            table options (see :func:`readers.read_table`).
        hf_dataset, hf_config: a Hugging Face ``datasets`` id (and configuration) for ``source=table``.
        oos: out-of-scope handling, ``None``, ``class``, ``threshold`` or ``exclude``.
        oos_label: the out-of-scope label (``oos`` in CLINC150).
        split_fractions: train/validation/test fractions when a source has no split at all.
        validation_fraction: fraction of train held out for validation when only train/test exist.
        split_seed: seed of the carved splits.
        template: PET's cloze template (``finetune=pet``): every text becomes it with ``{text}`` replaced by the
            text and ``{mask}`` by the tokenizer's mask token; ``None``: the text as it is.
        contrastive_pairs: ``finetune=setfit``'s ``num_iterations``: training batches are then pairs of
            training examples, this many positive and as many negative pairs per example
            (:func:`experiments.tasks.pairs.contrastive_pairs`, seeded by ``seed``); ``None``: single examples.
        **batching: see ``FeaturesDataModule`` (``batch_size``, ``max_length``, ...).
    """

    def __init__(
        self,
        tokenizer: Any,
        source: Any = "table",
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        *,
        labels: list[str] | None = None,
        output_dir: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        id_column: str | None = None,
        multi_label: bool = False,
        label_delimiter: str | None = None,
        format: str | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        oos: str | None = None,
        oos_label: str = readers.CLINC_OOS_LABEL,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        validation_fraction: float = 0.1,
        split_seed: int = 42,
        template: str | None = None,
        contrastive_pairs: int | None = None,
        **batching: Any,
    ):
        super().__init__(tokenizer, **batching)
        from experiments.tasks.classification.sources import source_from

        if oos not in OOS_MODES:
            raise ConfigError(f"data.oos must be null, class, threshold or exclude; got {oos!r}")
        if multi_label and oos == "threshold":
            raise ConfigError("data.oos=threshold is for single-label data; multi-label uses module.threshold")
        if not 0.0 < float(validation_fraction) < 1.0:
            raise ConfigError(f"data.validation_fraction must be in (0, 1); got {validation_fraction}")
        self.source = source_from(source)
        self.files = {"train": train_file, "validation": validation_file, "test": test_file,
                      "predict": predict_file}
        self.output_dir = output_dir
        self.table_options = {"text_column": text_column, "text_pair_column": text_pair_column,
                              "label_column": label_column, "id_column": id_column,
                              "multi_label": bool(multi_label), "label_delimiter": label_delimiter,
                              "format": format}
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.multi_label = bool(multi_label)
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.oos = oos
        self.oos_label = oos_label
        self.split_fractions = [float(f) for f in split_fractions]
        self.validation_fraction = float(validation_fraction)
        self.split_seed = int(split_seed)
        if template is not None and ("{text}" not in template or "{mask}" not in template):
            raise ConfigError(f"data.template must hold {{text}} and {{mask}}; got {template!r}")
        self.template = template
        self.contrastive_pairs = contrastive_pairs
        self._pairs: list[tuple[int, int, float]] | None = None
        self._labels = list(labels) if labels is not None else None
        self.examples: dict[str, list[Example]] = {}
        self.split_ids: dict[str, list[str]] = {}
        self.origin: dict[str, str] = {}  # split -> what it was read or carved from, when not its file
        self._loaded = False
        self._split_ids_written = False
        self.given = dict(self.files)  # as configured, before the source's plan fills in carved splits
        self._plan_files()

    def _plan_files(self) -> None:
        """Say where each split will come from before anything is read (the entry point checks ``files``).

        Carved splits name the file they are carved from; after reading, a split that turned out absent
        is set to ``None``.
        """
        self.source.plan(self)

    # ---- reading ----------------------------------------------------------------------------------
    def carve(self, examples: list[Example], names: Sequence[str], fractions: Sequence[float]) -> None:
        """Stratified, seeded split of ``examples`` into ``names``; ids recorded for split_ids.json."""
        parts = readers.stratified_split([e.label for e in examples], fractions, seed=self.split_seed)
        for name, indices in zip(names, parts, strict=True):
            self.examples[name] = [examples[i] for i in indices]
            self.split_ids[name] = [examples[i].id for i in indices]

    def _read_table(self, path: str) -> list[Example]:
        return readers.read_table(path, **self.table_options)

    def _load_hf(self) -> dict[str, list[Example]] | None:
        """Splits from a saved ``DatasetDict`` folder (``train_file``) or a hub id (``hf_dataset``)."""
        train = self.files["train"]
        saved = train is not None and Path(train).is_dir() and (Path(train) / "dataset_dict.json").is_file()
        if not saved and not self.hf_dataset:
            return None
        try:
            import datasets
        except ImportError as err:  # not a dependency of this package
            raise ConfigError(f"reading a Hugging Face dataset needs the `datasets` package: {err}") from err
        if saved:
            dd, where = datasets.load_from_disk(train), str(train)
        else:
            dd, where = datasets.load_dataset(self.hf_dataset, self.hf_config), str(self.hf_dataset)
        label_column = self.table_options["label_column"]
        out: dict[str, list[Example]] = {}
        for split_name, ds in dd.items():
            split = "validation" if split_name in _VALIDATION_NAMES else split_name
            if split not in ("train", "validation", "test"):
                continue
            feature = ds.features.get(label_column)
            inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for multi-label
            names = getattr(inner, "names", None)
            out[split] = examples_from_rows(
                ds, where=f"{where}[{split_name}]", text_column=self.text_column, label_column=label_column,
                text_pair_column=self.text_pair_column, label_names=names, multi_label=self.multi_label,
            )
            self.origin[split] = f"{where}[{split_name}]"
        if "train" not in out:
            raise DataError(where, None, f"no train split; splits found: {', '.join(dd)}")
        return out

    def _read_sources(self) -> None:
        """Fill ``self.examples`` for train/validation/test from the source, carving splits as needed."""
        f = self.files
        self.source.read(self)
        if self.oos is not None and not self.source.handles_oos:
            self._apply_oos_mode()
        if self.k_shot and self.examples.get("train"):
            self._draw_kshot()
        for split in ("train", "validation", "test"):
            if split not in self.examples:
                f[split] = None

    def _draw_kshot(self) -> None:
        """Keep K examples per class of train (and draw the K-shot dev set from the rest); ids recorded."""
        from experiments.tasks.kshot import kshot_indices

        pool = self.examples["train"]
        train, dev = kshot_indices([e.label for e in pool], self.k_shot, self.k_shot_seed, dev=self.k_shot_dev or 0)
        self.examples["train"] = [pool[i] for i in train]
        ids = {"train": [pool[i].id for i in train]}
        if self.k_shot_dev:
            self.examples["validation"] = [pool[i] for i in dev]
            self.origin["validation"] = f"{self.files['train']} (K-shot dev draw)"
            ids["validation"] = [pool[i].id for i in dev]
        self.record_kshot(self.output_dir, ids)

    def read_tables(self) -> None:
        """The ``Table`` source: the table files (or a Hugging Face dataset), missing splits carved from train."""
        f = self.files
        hf = self._load_hf()
        if hf is not None:
            # Splits the dataset lacks are carved from its train split, as for CSV input.
            if "validation" in hf:
                self.examples.update(hf)
            elif "test" in hf:
                self.examples["test"] = hf["test"]
                self.carve(hf["train"], ("train", "validation"),
                            (1 - self.validation_fraction, self.validation_fraction))
            else:
                self.carve(hf["train"], ("train", "validation", "test"), self.split_fractions)
            return
        test_only = self._labels is not None and bool(self.given["test"])
        if not f["train"] or test_only:
            if self._labels is None:
                raise ConfigError("data.train_file is not set")
            # Test mode: the labels come from the checkpoint; only the files given are read.
            for split in ("test",) if test_only else ("validation", "test"):
                if f[split]:
                    self.examples[split] = self._read_table(f[split])
            return
        train, given = f["train"], self.given
        examples = self._read_table(train)
        if not examples:
            raise DataError(train, None, "no examples; expected a header row and data rows")
        if given["validation"]:
            self.examples["train"] = examples
            self.examples["validation"] = self._read_table(given["validation"])
        elif given["test"]:
            self.carve(examples, ("train", "validation"),
                        (1 - self.validation_fraction, self.validation_fraction))
        else:
            self.carve(examples, ("train", "validation", "test"), self.split_fractions)
        if given["test"]:
            self.examples["test"] = self._read_table(given["test"])

    def _apply_oos_mode(self) -> None:
        """``threshold``: drop ``oos_label`` from train; ``exclude``: drop it everywhere."""
        drop = {"threshold": ("train",), "exclude": ("train", "validation", "test")}.get(self.oos or "", ())
        for split in drop:
            if split in self.examples:
                self.examples[split] = [e for e in self.examples[split] if e.label != self.oos_label]

    def _load(self) -> None:
        if self._loaded:
            return
        predict_only = self._labels is not None and bool(self.files["predict"])
        if not predict_only:
            self._read_sources()
        if self.files["predict"]:
            path = self.files["predict"]
            if Path(path).suffix.lower() == ".txt":
                self.examples["predict"] = read_plain_lines(path)
            else:
                self.examples["predict"] = readers.read_table(
                    path, text_column=self.text_column, label_column=None,
                    text_pair_column=self.text_pair_column, id_column=self.table_options["id_column"],
                    format=self.table_options["format"],
                )
        self._loaded = True

    # ---- labels -----------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Label names, index = class id: the sorted training labels (or the list given)."""
        if self._labels is None:
            self._load()
            if "train" not in self.examples:
                raise ConfigError("no labels: set data.train_file (or predict from a checkpoint)")
            found: set[str] = set()
            for e in self.examples["train"]:
                found.update(e.label if isinstance(e.label, tuple) else [e.label])
            found.discard(None)
            if self.oos == "threshold":
                found.discard(self.oos_label)
            if not found:
                raise DataError(self.files["train"], None, "no labels in the training data")
            self._labels = sorted(found)
        return self._labels

    @property
    def eval_labels(self) -> list[str]:
        """Classes scored at evaluation: :attr:`labels`, plus ``oos_label`` last in ``oos=threshold`` mode."""
        if self.oos == "threshold" and self.oos_label not in self.labels:
            return [*self.labels, self.oos_label]
        return self.labels

    def class_counts(self) -> torch.Tensor:
        """Training examples per class (single-label) or positive examples per label (multi-label)."""
        self._load()
        index = {lab: i for i, lab in enumerate(self.labels)}
        counts = torch.zeros(len(index), dtype=torch.long)
        for e in self.examples.get("train", []):
            for lab in e.label if isinstance(e.label, tuple) else (e.label,):
                if lab in index:
                    counts[index[lab]] += 1
        return counts

    def num_examples(self, split: str) -> int:
        self._load()
        return len(self.examples.get(split, []))

    def _encode_label(self, split: str, e: Example, index: dict[str, int]) -> int | list[float]:
        where = self.origin.get(split, self.files[split])

        def unknown(lab: str) -> DataError:
            row = e.line if e.line is not None else None
            ident = "" if e.line is not None else f"example {e.id!r}: "
            known = ", ".join(self.labels[:20]) + (", ..." if len(self.labels) > 20 else "")
            return DataError(where, row, f"{ident}label {lab!r} is not among the {len(self.labels)} training "
                             f"labels ({known})")

        if self.multi_label:
            labels = e.label if isinstance(e.label, tuple) else (e.label,)
            vec = [0.0] * len(self.labels)
            for lab in labels:
                if lab not in index:
                    raise unknown(lab)
                vec[index[lab]] = 1.0
            return vec
        if isinstance(e.label, tuple):
            raise DataError(where, e.line, f"example {e.id!r} has several labels; set data.multi_label=true")
        if e.label not in index:
            raise unknown(str(e.label))
        return index[e.label]

    # ---- features ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._load()
        index = {lab: i for i, lab in enumerate(self.eval_labels)}
        for split, examples in self.examples.items():
            if split in self.features or split not in STAGE_SPLITS.get(stage, SPLITS):
                continue
            if not examples:
                self.features[split] = []
                continue
            texts = [self._templated(e.text) for e in examples]
            pairs = [e.text_pair for e in examples]
            has_pairs = any(p is not None for p in pairs)
            if has_pairs and not all(p is not None for p in pairs):
                raise DataError(self.files[split], None, "some examples have a text pair and some do not")
            enc = self.tokenizer(texts, pairs if has_pairs else None, truncation=True, max_length=self.max_length)
            feats = []
            for i, e in enumerate(examples):
                feat = {k: v[i] for k, v in enc.items()}
                if split != "predict":
                    feat["labels"] = self._encode_label(split, e, index)
                feat["example_id"] = i
                feats.append(feat)
            self.features[split] = feats
            log.info("%s: %d examples (%s)", split, len(feats), self.origin.get(split, self.files[split]))
        self._write_split_ids()

    # ---- contrastive pairs (finetune=setfit) ---------------------------------------------------------
    def train_items(self) -> list[Any]:
        if not self.contrastive_pairs:
            return super().train_items()
        if self._pairs is None:
            from experiments.tasks.pairs import contrastive_pairs

            feats = self.features["train"]
            labels = [tuple(f["labels"]) if self.multi_label else int(f["labels"]) for f in feats]
            self._pairs = contrastive_pairs(labels, int(self.contrastive_pairs), self.seed)
            log.info("contrastive pairs: %d from %d training examples (num_iterations=%d)", len(self._pairs),
                     len(feats), self.contrastive_pairs)
        return self._pairs

    def train_lengths(self) -> list[int]:
        if not self.contrastive_pairs:
            return super().train_lengths()
        feats = self.features["train"]
        return [max(len(feats[a]["input_ids"]), len(feats[b]["input_ids"])) for a, b, _ in self.train_items()]

    def train_collate(self, items: list[tuple[Any, int]]) -> dict[str, Any]:
        """Single examples: the base's. Pairs: both sides collated, the second side's keys prefixed ``pair_``,
        and ``pair_similarity`` ``[B]`` the pairs' targets.

        When augmenting, each side of each pair is its own variant, drawn from
        ``RandomState([seed, epoch, a, b, side])``: SetFit trains one epoch in which every example occurs in
        many pairs, so a variant per example and epoch would only replace the K-shot set by one fixed
        perturbed copy."""
        if not self.contrastive_pairs:
            return super().train_collate(items)
        feats = self.features["train"]
        if self.augment is None:
            first = self.collate([feats[a] for (a, _, _), _ in items])
            second = self.collate([feats[b] for (_, b, _), _ in items])
        else:
            import numpy as np

            def variant(a: int, b: int, epoch: int, side: int) -> dict:
                rng = np.random.RandomState([self.seed, int(epoch), a, b, side])
                return self.augmented_feature(feats[(a, b)[side]], rng)

            first = self.collate([variant(a, b, epoch, 0) for (a, b, _), epoch in items])
            second = self.collate([variant(a, b, epoch, 1) for (a, b, _), epoch in items])
        batch = {k: v for k, v in first.items() if k not in ("labels", "example_id")}
        batch.update({f"pair_{k}": v for k, v in second.items() if k not in ("labels", "example_id")})
        batch["pair_similarity"] = torch.tensor([t for (_, _, t), _ in items], dtype=torch.float32)
        return batch

    def embedding_loader(self, split: str = "train") -> Any:
        """Every example of ``split`` in order, unsharded (each DDP rank sees all): what the SetFit head is
        fitted on. Batches of ``eval_batch_size`` with ``labels``."""
        from torch.utils.data import DataLoader

        return DataLoader(self.features[split], batch_size=self.eval_batch_size, collate_fn=self.collate)

    def _templated(self, text: str) -> str:
        if self.template is None:
            return text
        return self.template.replace("{mask}", self.tokenizer.mask_token).replace("{text}", text)

    def augmented_feature(self, feature: dict, rng: Any) -> dict:
        """Re-tokenize this epoch's variant of the training text (``data.augment``); label and pair kept."""
        e = self.examples["train"][feature["example_id"]]
        enc = self.tokenizer(self._templated(self.augment(e.text, rng)), e.text_pair, truncation=True,
                             max_length=self.max_length)
        return {**dict(enc), "labels": feature["labels"], "example_id": feature["example_id"]}

    def _write_split_ids(self) -> None:
        if self._split_ids_written or not self.split_ids or not self.output_dir:
            return
        if self.trainer is not None and not self.trainer.is_global_zero:
            return
        readers.write_split_ids(Path(self.output_dir) / "split_ids.json", self.split_ids)
        self._split_ids_written = True

    def hf_collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
