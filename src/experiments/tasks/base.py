"""What every task's DataModule shares: batching of pre-tokenized features.

Why: batches are padded dynamically by transformers' collators (never to the maximum length), and
training batches group examples of similar length (transformers' length grouping, as HF Trainer's
``group_by_length``), which removes most padding. The training order depends only on ``(seed, epoch)``
and the loader's position is saved in checkpoints (``tasks.sampling``), so a run resumes mid-epoch
exactly; under DDP, validation and test see every example exactly once. A task only fills
``self.features[split]`` with dicts of token ids and says which collator pads them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

# Fast tokenizers fork badly into DataLoader workers; tokenization is done before loaders start.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPLITS = ("train", "validation", "test", "predict")
# The splits each Lightning stage reads (``LightningDataModule.setup(stage)``); None: all of them.
STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "validation", "test"),  # test too: a bad test file fails before training
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


log = logging.getLogger(__name__)


def pad_extras(collator: Callable[[list[dict]], dict], features: list[dict]) -> dict[str, Any]:
    """Collate with a Hugging Face collator, then add our bookkeeping keys.

    ``example_id`` (int per feature) becomes a ``[batch]`` tensor; ``word_index`` (list per feature)
    is right-padded with -1 to the padded sequence length, ``[batch, seq]``.
    """
    extras = ("example_id", "word_index")
    batch = collator([{k: v for k, v in f.items() if k not in extras} for f in features])
    if "example_id" in features[0]:
        batch["example_id"] = torch.tensor([f["example_id"] for f in features], dtype=torch.long)
    if "word_index" in features[0]:
        seq = batch["input_ids"].shape[1]
        batch["word_index"] = torch.tensor(
            [f["word_index"] + [-1] * (seq - len(f["word_index"])) for f in features], dtype=torch.long
        )
    return dict(batch)


# Bumped whenever encoding changes in a way the cache key does not see.
CACHE_VERSION = 2


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (the cache key's view of a data file)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of a fast tokenizer's full definition (vocabulary, normalizer, special tokens) and class."""
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = repr(tokenizer)
    else:
        # Truncation and padding are call-time state that every tokenizer call overwrites, not definition.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{text}".encode()).hexdigest()


def cached_features(cache_dir: str | None, key: Callable[[], dict[str, Any]],
                    compute: Callable[[], list[dict]]) -> list[dict]:
    """``compute()``, or its result stored under ``cache_dir`` by an earlier run with the same ``key()``.

    ``key`` is called only when there is a cache (it hashes files and the tokenizer). The key must name
    everything the features depend on (tokenizer fingerprint, file digests, options);
    :data:`CACHE_VERSION` and the package version are added. Files are written atomically and read with
    ``torch.load(weights_only=True)``, which unpickles plain containers and numbers only. A file that
    cannot be read is recomputed and replaced. ``cache_dir=None`` disables the cache.
    """
    if not cache_dir:
        return compute()
    import hashlib
    import json
    import logging
    from importlib import metadata

    from experiments.reporting import atomic_write

    try:
        version = metadata.version("experiments")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "source"
    full = {**key(), "cache_version": CACHE_VERSION, "package": version}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = os.path.join(cache_dir, f"{digest}.pt")
    log = logging.getLogger(__name__)
    if os.path.isfile(path):
        try:
            feats = _unpack(torch.load(path, weights_only=True))
            log.info("features read from the cache %s", path)
            return feats
        except Exception as err:  # noqa: BLE001 - a damaged or foreign file: recompute
            log.warning("feature cache %s unreadable (%s): recomputing", path, type(err).__name__)
    feats = compute()
    try:
        packed = _pack(feats)
        atomic_write(path, lambda fh: torch.save(packed, fh))
    except OSError as err:  # a read-only or full cache folder never stops a run
        log.warning("feature cache not written to %s: %s", path, err)
    return feats


def _pack(feats: list[dict]) -> dict[str, Any]:
    """Features as a few flat int64 tensors (fast to save and load): per key, either one value per
    feature or the concatenated lists with their lengths."""
    keys = list(feats[0]) if feats else []
    packed: dict[str, Any] = {"n": len(feats), "keys": keys, "scalar": {}, "flat": {}, "lengths": {}}
    for k in keys:
        values = [f[k] for f in feats]
        if isinstance(values[0], list):
            packed["lengths"][k] = torch.tensor([len(v) for v in values], dtype=torch.long)
            packed["flat"][k] = torch.tensor([x for v in values for x in v], dtype=torch.float64
                                             if any(isinstance(x, float) for v in values for x in v) else torch.long)
        else:
            packed["scalar"][k] = torch.tensor(values, dtype=torch.float64 if isinstance(values[0], float)
                                               else torch.long)
    return packed


def _unpack(packed: dict[str, Any]) -> list[dict]:
    n = packed["n"]
    columns: dict[str, list] = {k: v.tolist() for k, v in packed["scalar"].items()}
    for k, flat in packed["flat"].items():
        values, out, pos = flat.tolist(), [], 0
        for length in packed["lengths"][k].tolist():
            out.append(values[pos:pos + length])
            pos += length
        columns[k] = out
    return [{k: columns[k][i] for k in packed["keys"]} for i in range(n)]


class FeaturesDataModule(L.LightningDataModule):
    """Serves ``self.features[split]`` (lists of feature dicts) through DataLoaders.

    Args:
        tokenizer: the encoder's fast tokenizer.
        batch_size: training batch size (examples per optimizer micro-step).
        eval_batch_size: batch size for validation/test/predict (default: ``batch_size``).
        max_length: maximum sequence length in sub-tokens, special tokens included.
        group_by_length: length-grouped shuffling of training batches.
        max_tokens_per_batch: training batches by a token budget instead of ``batch_size``
            (:class:`~experiments.tasks.sampling.TokenBudgetSampler`: examples x longest example at most
            this many tokens); ``None``: ``batch_size`` examples per batch.
        pad_to_multiple_of: pad each batch to a multiple of this (e.g. 8 for tensor cores).
        num_workers: DataLoader worker processes.
        cache_dir: folder of the tokenized-feature cache (a second run on the same files, tokenizer and
            options reads its features from there); None disables it.
        seed: seed of the training order (the run's ``seed``): the permutation of epoch ``e`` depends only on
            ``(seed, e)``.
        k_shot: train on K examples per class (NER: K mentions per entity type) drawn from the training
            split (:mod:`~experiments.tasks.kshot`); ``None``: all of it.
        k_shot_seed: seed of the K-shot draw (independent of ``seed``, so one draw can be trained with
            several seeds).
        k_shot_dev: with ``k_shot``, a development set of this many examples per class drawn from the
            training pool, disjoint from the draw (LM-BFF); ``None``: the configured validation split.
        augment: an augmenter of :mod:`~experiments.tasks.augment` applied to training examples on the fly
            (the variant of example ``i`` in epoch ``e`` from ``RandomState([seed, e, i])``); ``None``: off.

    Raises:
        ConfigError: ``k_shot``, ``k_shot_dev`` or ``max_tokens_per_batch`` is not a positive integer (or null).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        group_by_length: bool = True,
        max_tokens_per_batch: int | None = None,
        pad_to_multiple_of: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
        k_shot: int | None = None,
        k_shot_seed: int = 0,
        k_shot_dev: int | None = None,
        augment: Any | None = None,
    ):
        super().__init__()
        from experiments.errors import ConfigError

        for key, value in (("k_shot", k_shot), ("k_shot_dev", k_shot_dev),
                           ("max_tokens_per_batch", max_tokens_per_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key} must be null or a positive integer; got {value!r}")
        if k_shot_dev is not None and k_shot is None:
            raise ConfigError("data.k_shot_dev needs data.k_shot")
        self.k_shot, self.k_shot_seed, self.k_shot_dev = k_shot, int(k_shot_seed), k_shot_dev
        self.augment = augment
        if augment is not None:
            log.info("training split augmented on the fly: %r", augment)
        self.tokenizer = tokenizer
        self.cache_dir = cache_dir
        self.seed = int(seed)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length
        self.group_by_length = group_by_length
        self.max_tokens_per_batch = max_tokens_per_batch
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_workers = num_workers
        self.features: dict[str, list[dict]] = {}
        self._train_loader: Any = None
        self._train_loader_state: dict[str, int] | None = None

    def record_kshot(self, output_dir: str | None, ids: dict[str, list[str]]) -> None:
        """Log the K-shot draw and write its example ids to ``<output_dir>/kshot_ids.json`` (rank 0)."""
        from experiments.tasks.splits import write_split_ids

        log.info("K-shot draw (K=%d, k_shot_seed=%d): %s", self.k_shot, self.k_shot_seed,
                 ", ".join(f"{k} {len(v)}" for k, v in ids.items()))
        trainer = getattr(self, "trainer", None)
        if output_dir and (trainer is None or trainer.is_global_zero):
            write_split_ids(os.path.join(output_dir, "kshot_ids.json"), ids)

    def hf_collator(self) -> Callable[[list[dict]], dict]:
        """The transformers collator that pads this task's features."""
        raise NotImplementedError

    def collate(self, features: list[dict]) -> dict[str, Any]:
        return pad_extras(self.hf_collator(), features)

    def augmented_feature(self, feature: dict, rng: Any) -> dict:
        """The feature of one variant of the training example behind ``feature`` (tasks that augment)."""
        raise NotImplementedError(f"{type(self).__name__} does not support data.augment")

    def train_items(self) -> list[Any]:
        """What the training sampler draws from (one item per training example; ``finetune=setfit``: pairs)."""
        return self.features["train"]

    def train_lengths(self) -> list[int]:
        """Length of every item of :meth:`train_items`, for length-grouped batches."""
        return [len(f["input_ids"]) for f in self.features["train"]]

    def train_collate(self, items: list[tuple[dict, int]]) -> dict[str, Any]:
        """The training batch from ``(feature, epoch)`` items (:class:`~experiments.tasks.sampling.EpochFeatures`):
        :meth:`collate`, each example replaced by this epoch's variant when augmenting."""
        features, epoch = [f for f, _ in items], int(items[0][1])
        if self.augment is None:
            return self.collate(features)
        import numpy as np

        return self.collate([self.augmented_feature(f, np.random.RandomState([self.seed, epoch, f["example_id"]]))
                             for f in features])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """Training: :class:`~experiments.tasks.sampling.TrainSampler` in a resumable loader (order from
        ``(seed, epoch)``, saved position). Validation/test: each rank's unpadded share, so that every
        example is evaluated exactly once under DDP. Predict: Lightning's default (unpadded) handling."""
        from experiments.tasks.sampling import (
            EpochFeatures,
            EvalSampler,
            ResumableDataLoader,
            TokenBudgetSampler,
            TrainSampler,
        )

        if split not in self.features:
            raise ValueError(f"no {split} data: set data.{split}_file")
        data = self.train_items() if shuffle else self.features[split]
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # Own generators: starting an iteration must not draw from the global RNG (dropout's), so that
        # training is the same whether or not, and how often, validation runs in between.
        common = {"batch_size": batch_size, "collate_fn": self.collate, "num_workers": self.num_workers,
                  "persistent_workers": self.num_workers > 0, "generator": torch.Generator()}
        if shuffle:
            if self.max_tokens_per_batch:
                sampler = TokenBudgetSampler(self.train_lengths(), self.max_tokens_per_batch, seed=self.seed,
                                             num_replicas=world, rank=rank, pad_to_multiple_of=self.pad_to_multiple_of)
                common["batch_size"] = None  # the sampler yields whole batches
                log.info("token-budget batches: %d per epoch of at most %d tokens (%.1f examples on average)",
                         sampler.num_batches, self.max_tokens_per_batch, len(data) / max(sampler.num_batches, 1))
            else:
                sampler = TrainSampler(self.train_lengths(), batch_size, seed=self.seed,
                                       group_by_length=self.group_by_length, num_replicas=world, rank=rank)
            # Workers restart every epoch so that they see its number (EpochFeatures).
            loader = ResumableDataLoader(EpochFeatures(data), sampler=sampler,
                                         **{**common, "collate_fn": self.train_collate, "persistent_workers": False})
            if self._train_loader_state:
                loader.load_state_dict(self._train_loader_state)
                self._train_loader_state = None
            self._train_loader = loader
            return loader
        if split == "predict":
            return DataLoader(data, **common)
        if len(data) < world:
            from experiments.errors import ConfigError

            raise ConfigError(f"the {split} split has {len(data)} examples, fewer than the {world} processes")
        return DataLoader(data, sampler=EvalSampler(len(data), num_replicas=world, rank=rank), **common)

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position; Lightning stores it in every checkpoint."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored here, not (only) through Lightning's own restore of stateful loaders, which is skipped
        # when configure_optimizers reads trainer.estimated_stepping_batches (Lightning issue #20550).
        # Lightning restores the datamodule before or after creating the loader depending on the
        # strategy; the loader iterates lazily, so applying the state to an existing one works too.
        state = state_dict.get("train_loader")
        if state and self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._train_loader_state = state

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("predict", shuffle=False)
