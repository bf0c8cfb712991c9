"""Recommendation DataModule: MIND-format splits in, ranking batches out.

Training follows the NRMS recipe (Wu et al. 2019, "Neural News Recommendation with Multi-Head
Self-Attention", EMNLP): one sample per clicked candidate of a training impression, with ``negatives``
(K) non-clicked candidates of the same impression drawn at random (with replacement only when the
impression has fewer than K); the loss is the softmax cross-entropy of the K+1 scores. Draws are seeded by
(``sample_seed``, epoch, sample index): the same run draws the same negatives, and every epoch new ones.

On the shared base (:class:`~experiments.tasks.base.FeaturesDataModule`): the order of the training
samples depends only on ``(seed, epoch)`` and the loader's position is saved in checkpoints (exact
resume), and under DDP every evaluation batch is scored by exactly one process.

Evaluation scores every candidate of every impression. Evaluation batches are whole impressions packed
until ``eval_batch_size`` candidates (an impression larger than that is a batch on its own).

Batches (``architecture``):

* ``cross_encoder``: ``inputs`` = tokenized pairs (user text, candidate text), one row per candidate;
  the user text is the titles of the ``max_history`` most recent history items, most recent first,
  joined by " ; " (``longest_first`` truncation to ``max_length`` drops the oldest first).
* ``two_tower``: ``inputs`` = the tokenized texts of the distinct items of the batch (``item_max_length``);
  ``history_index`` ``[B, H]`` and ``candidate_index`` ``[B, C]`` point into them (-1 = padding).

Both carry ``candidate_mask`` ``[B, C]``, ``labels`` ``[B, C]`` (1 = clicked; the clicked candidate is
column 0 in training batches) and ``impression_index`` ``[B]`` (position in the split's impressions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from experiments.errors import ConfigError, DataError
from experiments.tasks.base import STAGE_SPLITS, FeaturesDataModule
from experiments.tasks.recommendation.mind import TEXT_FIELDS, Impression, MindSplit, read_split

log = logging.getLogger(__name__)

ARCHITECTURES = ("cross_encoder", "two_tower")
SPLIT_DIRS = {"train": "train", "validation": "dev", "test": "test"}
HISTORY_SEPARATOR = " ; "


def sample_negatives(negatives: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """``k`` of ``negatives``: without replacement when there are at least ``k``, else with replacement."""
    if not negatives:
        raise ValueError("no negatives to sample from")
    idx = rng.choice(len(negatives), size=k, replace=len(negatives) < k)
    return [negatives[int(i)] for i in idx]


class TrainSamples(Dataset):
    """One sample per clicked candidate of the training impressions that have a non-clicked one.

    ``self[i]`` draws its K negatives with ``np.random.default_rng([seed, epoch, i])``.
    """

    def __init__(self, impressions: Sequence[Impression], negatives: int, seed: int):
        self.impressions = impressions
        self.k = negatives
        self.seed = seed
        self.epoch = 0
        self.samples = [(i, pos) for i, imp in enumerate(impressions) if imp.negatives for pos in imp.positives]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, positive = self.samples[i]
        imp = self.impressions[index]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return {"impression_index": index, "history": imp.history,
                "candidates": [positive, *sample_negatives(imp.negatives, self.k, rng)],
                "labels": [1] + [0] * self.k}


class EvalBatches(Dataset):
    """Whole impressions packed into batches of at most ``max_candidates`` candidates."""

    def __init__(self, impressions: Sequence[Impression], max_candidates: int):
        self.impressions = impressions
        self.batches: list[list[int]] = []
        current, size = [], 0
        for i, imp in enumerate(impressions):
            if current and size + len(imp.candidates) > max_candidates:
                self.batches.append(current)
                current, size = [], 0
            current.append(i)
            size += len(imp.candidates)
        if current:
            self.batches.append(current)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        out = []
        for index in self.batches[i]:
            imp = self.impressions[index]
            out.append({"impression_index": index, "history": imp.history, "candidates": imp.candidates,
                        "labels": imp.labels or [0] * len(imp.candidates)})
        return out


class RecommendationDataModule(FeaturesDataModule):
    """MIND-format splits for ``RankingModule``.

    Args:
        tokenizer: the encoder's fast tokenizer.
        labels: the checkpoint's label list in test/predict mode (always ``["score"]``), else None. When
            given, only the predict split (predict mode) or the test split (test mode) is read.
        architecture: ``cross_encoder`` or ``two_tower`` (what the batches hold).
        data_dir: a folder with ``train/``, ``dev/``, ``test/``; used for a ``*_file`` that is null.
        train_file, validation_file, test_file, predict_file: a split's behaviors.tsv or its folder;
            news.tsv is read from the same folder. A test file without labels is not evaluated (rank it
            with ``mode=predict data.predict_file=...``).
        item_fields: news.tsv columns that make an item's text (category, subcategory, title, abstract).
        max_history: most recent history items used per user.
        negatives: K, non-clicked candidates per clicked one in training.
        sample_seed: seed of the negative draws.
        max_length: sub-tokens per (user, candidate) pair (cross_encoder).
        item_max_length: sub-tokens per item text (two_tower).
        batch_size: training samples per batch; eval_batch_size: candidates per evaluation batch.
        pad_to_multiple_of: pad each batch to a multiple of this.
        num_workers: DataLoader worker processes.
        seed: seed of the training order (the run's ``seed``).

    Raises (when ``labels`` or ``splits`` is first read, as the entry point does right after building it):
        ConfigError: unknown architecture or item field, a bad count.
        DataError: a malformed MIND file (file and line named), or a training split with no impression
            that has both a click and a non-click.
    """

    def __init__(
        self,
        tokenizer: Any,
        labels: Sequence[str] | None = None,
        *,
        architecture: str = "cross_encoder",
        data_dir: str | None = None,
        train_file: str | None = None, validation_file: str | None = None,
        test_file: str | None = None, predict_file: str | None = None,
        item_fields: Sequence[str] = ("title",),
        max_history: int = 50,
        negatives: int = 4,
        sample_seed: int = 42,
        max_length: int = 128,
        item_max_length: int = 32,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        pad_to_multiple_of: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        # Evaluation loaders hand out one packed batch (a list of impressions) at a time.
        super().__init__(tokenizer, batch_size=batch_size, eval_batch_size=1, max_length=max_length,
                         group_by_length=False, pad_to_multiple_of=pad_to_multiple_of, num_workers=num_workers,
                         seed=seed)
        self.architecture, self.item_fields = architecture, tuple(item_fields)
        self.max_history, self.negatives, self.sample_seed = max_history, negatives, sample_seed
        self.item_max_length = item_max_length
        self.eval_candidates = eval_batch_size
        self.eval_only = labels is not None
        self.given = {"train": train_file, "validation": validation_file, "test": test_file, "predict": predict_file}
        self.data_dir = data_dir
        self._splits: dict[str, MindSplit] | None = None

    def _check(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"data.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        bad = [f for f in self.item_fields if f not in TEXT_FIELDS]
        if bad or not self.item_fields:
            raise ConfigError(f"data.item_fields must be a non-empty list of {TEXT_FIELDS}, "
                              f"got {list(self.item_fields)}")
        if self.negatives < 1:
            raise ConfigError(f"data.negatives must be >= 1, got {self.negatives}")
        if self.max_history < 0:
            raise ConfigError(f"data.max_history must be >= 0, got {self.max_history}")

    @property
    def splits(self) -> dict[str, MindSplit]:
        """Every given split, read and checked on first access (the entry point reads ``labels`` right
        after instantiation, so a malformed file fails before the model is loaded)."""
        if self._splits is None:
            self._check()
            paths: dict[str, Path] = {k: Path(v) for k, v in self.given.items() if v}
            if self.eval_only:
                # Test/predict mode: the model is trained; only the split to score or rank is read.
                keep = "predict" if "predict" in paths else "test"
                paths = {k: v for k, v in paths.items() if k == keep}
            elif self.data_dir:
                for split, sub in SPLIT_DIRS.items():
                    if split not in paths and (Path(self.data_dir) / sub / "behaviors.tsv").exists():
                        paths[split] = Path(self.data_dir) / sub / "behaviors.tsv"
            splits = {split: read_split(p) for split, p in paths.items()}
            for split in ("train", "validation"):
                if split in splits and not splits[split].labelled:
                    raise DataError(splits[split].behaviors_file, None, f"the {split} split has no click labels; "
                                    "expected <news_id>-1 / <news_id>-0 tokens")
            if "test" in splits and not splits["test"].labelled:
                path = splits["test"].behaviors_file
                log.warning("test file %s has no labels: not evaluated; rank it with mode=predict "
                            "data.predict_file=%s", path, path)
            if "train" in splits and not any(i.positives and i.negatives for i in splits["train"].impressions):
                raise DataError(splits["train"].behaviors_file, None,
                                "no training impression has both a click and a non-click")
            self._splits = splits
        return self._splits

    @property
    def labels(self) -> list[str]:
        """Always ``["score"]`` (one output per candidate); reads and checks the data first."""
        self.splits  # noqa: B018
        return ["score"]

    # ---- what the module and the entry point read -------------------------------------------------
    @property
    def files(self) -> dict[str, str]:
        """Labelled evaluation splits and the other given files, by split name."""
        return {k: str(s.behaviors_file) for k, s in self.splits.items() if k != "test" or s.labelled}

    def impressions(self, split: str) -> list[Impression]:
        if split not in self.splits:
            raise ConfigError(f"no {split} data: set data.{split}_file")
        return self.splits[split].impressions

    # ---- text and batches -------------------------------------------------------------------------
    def _text(self, split: str, news_id: str) -> str:
        return self.splits[split].news[news_id].text(self.item_fields)

    def _user_text(self, split: str, history: Sequence[str]) -> str:
        recent = list(history[-self.max_history:])[::-1] if self.max_history else []
        return HISTORY_SEPARATOR.join(self.splits[split].news[n].title for n in recent)

    def _tokenize(self, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, pairs, truncation="longest_first" if pairs is not None else True,
                             max_length=max_length, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                             return_tensors="pt")
        return dict(enc)

    def collate_rows(self, rows: list[dict[str, Any]], split: str) -> dict[str, Any]:
        """A batch from samples (see the module docstring for its keys)."""
        n_cand = max(len(r["candidates"]) for r in rows)
        mask = torch.zeros(len(rows), n_cand, dtype=torch.bool)
        labels = torch.zeros(len(rows), n_cand, dtype=torch.float)
        for b, r in enumerate(rows):
            mask[b, : len(r["candidates"])] = True
            labels[b, : len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.float)
        batch: dict[str, Any] = {
            "candidate_mask": mask,
            "labels": labels,
            "impression_index": torch.tensor([r["impression_index"] for r in rows], dtype=torch.long),
        }
        if self.architecture == "cross_encoder":
            users, cands = [], []
            for r in rows:
                user = self._user_text(split, r["history"])
                for c in r["candidates"]:
                    users.append(user)
                    cands.append(self._text(split, c))
            batch["inputs"] = self._tokenize(users, cands, self.max_length)
            return batch
        items: dict[str, int] = {}
        hist = [list(r["history"][-self.max_history:]) if self.max_history else [] for r in rows]
        for h, r in zip(hist, rows, strict=True):
            for n in (*h, *r["candidates"]):
                items.setdefault(n, len(items))
        n_hist = max(1, max(len(h) for h in hist))
        history_index = torch.full((len(rows), n_hist), -1, dtype=torch.long)
        candidate_index = torch.full((len(rows), n_cand), -1, dtype=torch.long)
        for b, (h, r) in enumerate(zip(hist, rows, strict=True)):
            history_index[b, : len(h)] = torch.tensor([items[n] for n in h], dtype=torch.long)
            candidate_index[b, : len(r["candidates"])] = torch.tensor([items[n] for n in r["candidates"]])
        batch["inputs"] = self._tokenize([self._text(split, n) for n in items], None, self.item_max_length)
        batch["history_index"] = history_index
        batch["candidate_index"] = candidate_index
        return batch

    # ---- features and loaders ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Training samples and packed evaluation batches of the splits ``stage`` uses."""
        for split in STAGE_SPLITS.get(stage, tuple(self.splits)):
            if split not in self.splits or split in self.features:
                continue
            if split == "train":
                samples = TrainSamples(self.impressions("train"), self.negatives, self.sample_seed).samples
                self.features[split] = [{"sample": k, "impression_index": i, "positive": pos}
                                        for k, (i, pos) in enumerate(samples)]
            else:
                self.features[split] = [{"split": split, "impressions": b}
                                        for b in EvalBatches(self.impressions(split), self.eval_candidates).batches]

    def train_lengths(self) -> list[int]:
        return [1] * len(self.features["train"])  # no length grouping: one sample is one click

    def train_collate(self, items: list[tuple[dict, int]]) -> dict[str, Any]:
        """NRMS samples with this epoch's negatives, ``default_rng([sample_seed, epoch, sample])``."""
        rows = []
        impressions = self.impressions("train")
        for f, epoch in items:
            imp = impressions[f["impression_index"]]
            rng = np.random.default_rng([self.sample_seed, int(epoch), f["sample"]])
            rows.append({"impression_index": f["impression_index"], "history": imp.history,
                         "candidates": [f["positive"], *sample_negatives(imp.negatives, self.negatives, rng)],
                         "labels": [1] + [0] * self.negatives})
        return self.collate_rows(rows, "train")

    def collate(self, features: list[dict]) -> dict[str, Any]:
        """One evaluation batch from packed impression lists (the loaders hand out one at a time)."""
        rows = []
        for f in features:
            impressions = self.impressions(f["split"])
            for index in f["impressions"]:
                imp = impressions[index]
                rows.append({"impression_index": index, "history": imp.history, "candidates": imp.candidates,
                             "labels": imp.labels or [0] * len(imp.candidates)})
        return self.collate_rows(rows, features[0]["split"])

    def hf_collator(self):  # the base class's hook; this module collates itself
        raise NotImplementedError
