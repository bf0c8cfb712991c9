"""Where sentence-classification examples come from: one reader object per kind of source, chosen by Hydra
(``data.source: {_target_: experiments.tasks.classification.sources.PhraseBank, agreement: "50"}``).

Why objects: a source's own options (PhraseBank's agreement level, FiQA's score thresholds, Bitext's label
column) live on it, so the datamodule and the dataset presets carry only what they use, and adding a corpus
reader is one class here plus one YAML in ``conf/dataset``. Every source does two things:

* :meth:`plan`: say, before reading, which file each split comes from (the run's log and whether a test
  split exists, for the entry point), and
* :meth:`read`: fill ``dm.examples`` for train/validation/test, carving the splits the corpus lacks with
  the datamodule's seeded, stratified :meth:`~TextClassificationDataModule.carve`
  (``split_fractions`` / ``validation_fraction``).

A plain name (``data.source=banking77``) gives that source with its defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.errors import ConfigError
from experiments.tasks.classification import readers

if TYPE_CHECKING:  # pragma: no cover
    from experiments.tasks.classification.datamodule import TextClassificationDataModule

__all__ = ["Source", "Table", "PhraseBank", "FiQA", "Banking77", "Clinc150", "Bitext", "SOURCES", "source_from"]


def _need(value: str | None, key: str) -> str:
    if not value:
        raise ConfigError(f"data.{key} is not set")
    return value


class Source:
    """What every source provides (see the module docstring). ``handles_oos``: the corpus marks its own
    out-of-scope examples (CLINC150), so the datamodule's ``oos`` filter is not applied on top.
    ``single_origin``: every split is read or carved from one place, :meth:`origin`."""

    handles_oos = False
    single_origin = False

    def origin(self, dm: TextClassificationDataModule) -> str | None:
        """Where the splits come from: the train file (sources with a ``data_dir``: that folder without one)."""
        return dm.files["train"] or getattr(self, "data_dir", None)

    def plan(self, dm: TextClassificationDataModule) -> None:
        """Set, in ``dm.files``, the file each split is read or carved from (``train``/``validation``/``test``)."""
        if self.single_origin:
            origin = self.origin(dm)
            dm.files.update(train=origin, validation=origin, test=origin)
        elif not dm.files["validation"]:
            dm.files["validation"] = dm.files["train"]

    def read(self, dm: TextClassificationDataModule) -> None:
        raise NotImplementedError


@dataclass
class Table(Source):
    """The user's CSV / TSV / JSON Lines files, a ``datasets.DatasetDict.save_to_disk`` folder as
    ``train_file``, or a Hugging Face ``datasets`` id (``data.hf_dataset``); columns and label format are the
    datamodule's table options. Missing validation/test splits are carved from train."""

    def plan(self, dm: TextClassificationDataModule) -> None:
        files = dm.files
        hf = bool(dm.hf_dataset or (files["train"] and Path(files["train"]).is_dir()))
        files["train"] = files["train"] or dm.hf_dataset
        if hf:  # the dataset's own splits, or carved
            files.update(validation=files["train"], test=files["train"])
        elif not files["validation"]:
            files["validation"] = files["train"]
            if not files["test"]:
                files["test"] = files["train"]

    def read(self, dm: TextClassificationDataModule) -> None:
        dm.read_tables()


@dataclass
class PhraseBank(Source):
    """Financial PhraseBank v1.0 (Malo et al. 2014) at ``agreement`` ``50``, ``66``, ``75`` or ``all``, found
    in ``data_dir`` (:func:`readers.phrasebank_file`) unless ``data.train_file`` names the file; no official
    split: seeded stratified train/validation/test (``data.split_fractions``)."""

    agreement: str = "all"
    data_dir: str | None = None

    single_origin = True

    def read(self, dm: TextClassificationDataModule) -> None:
        path = str(dm.given["train"] or readers.phrasebank_file(_need(self.data_dir, "source.data_dir"),
                                                              str(self.agreement)))
        dm.files.update(train=path, validation=path, test=path)
        dm.carve(readers.read_phrasebank(path), ("train", "validation", "test"), dm.split_fractions)


@dataclass
class FiQA(Source):
    """FiQA-2018 task 1 (``parts``: headline and/or post files under ``data_dir``), sentiment scores cut into
    three classes at ``negative_below`` / ``positive_above`` (:func:`readers.read_fiqa`); train/test only, so
    validation is carved from train (``data.validation_fraction``)."""

    parts: Sequence[str] = field(default_factory=lambda: ["headline", "post"])
    negative_below: float = -0.1
    positive_above: float = 0.1
    data_dir: str | None = None

    def __post_init__(self) -> None:
        parts = [str(p) for p in self.parts]
        if not parts or any(p not in ("headline", "post") for p in parts):
            raise ConfigError(f"data.source.parts must be headline and/or post; got {parts}")
        self.parts = parts

    single_origin = True

    def read(self, dm: TextClassificationDataModule) -> None:
        base = Path(_need(self.data_dir, "source.data_dir"))
        train = [base / f"task1_{p}_ABSA_train.json" for p in self.parts]
        test = [base / f"task1_{p}_ABSA_test.json" for p in self.parts]
        dm.files.update(train=str(train[0]), validation=str(train[0]), test=str(test[0]))
        dm.origin.update(train=", ".join(map(str, train)), validation=", ".join(map(str, train)))
        cuts = {"negative_below": float(self.negative_below), "positive_above": float(self.positive_above)}
        dm.carve(readers.read_fiqa(train, **cuts), ("train", "validation"),
                 (1 - dm.validation_fraction, dm.validation_fraction))
        dm.examples["test"] = readers.read_fiqa(test, **cuts)
        dm.origin["test"] = ", ".join(map(str, test))


@dataclass
class Banking77(Source):
    """banking77 (Casanueva et al. 2020): ``train_file`` / ``test_file`` CSVs; validation carved from train."""

    def read(self, dm: TextClassificationDataModule) -> None:
        dm.carve(readers.read_banking77(_need(dm.files["train"], "train_file")), ("train", "validation"),
                 (1 - dm.validation_fraction, dm.validation_fraction))
        if dm.files["test"]:
            dm.examples["test"] = readers.read_banking77(dm.files["test"])


@dataclass
class Clinc150(Source):
    """CLINC150 (Larson et al. 2019): ``data_full.json`` (or a folder holding it) as ``train_file``, with its
    official splits and out-of-scope examples handled by ``data.oos``."""

    handles_oos = True

    single_origin = True

    def read(self, dm: TextClassificationDataModule) -> None:
        dm.examples.update(readers.read_clinc150(_need(dm.files["train"], "train_file"), oos=dm.oos or "class"))


@dataclass
class Bitext(Source):
    """The Bitext customer-support CSV as ``train_file``; ``label``: ``intent`` (27) or ``category`` (11);
    seeded stratified train/validation/test."""

    label: str = "intent"

    def __post_init__(self) -> None:
        if self.label not in ("intent", "category"):
            raise ConfigError(f"data.source.label must be intent or category; got {self.label!r}")

    single_origin = True

    def read(self, dm: TextClassificationDataModule) -> None:
        path = _need(dm.files["train"], "train_file")
        dm.carve(readers.read_bitext(path, label=self.label), ("train", "validation", "test"), dm.split_fractions)


SOURCES: dict[str, type[Source]] = {"table": Table, "phrasebank": PhraseBank, "fiqa": FiQA,
                                    "banking77": Banking77, "clinc150": Clinc150, "bitext": Bitext}


def source_from(value: Any) -> Source:
    """A :class:`Source` from a source object or a plain name (its defaults).

    Raises:
        ConfigError: an unknown name or another kind of value.
    """
    if isinstance(value, Source):
        return value
    if isinstance(value, str) and value in SOURCES:
        return SOURCES[value]()
    raise ConfigError(f"data.source must be one of {', '.join(SOURCES)} or a source node with a _target_ in "
                      f"experiments.tasks.classification.sources; got {value!r}")
