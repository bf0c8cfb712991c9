"""Samplers and the training DataLoader that make a run resumable mid-epoch and DDP evaluation exact.

Why our own: transformers' ``LengthGroupedSampler`` draws its permutation from the global torch RNG, so
the order of an epoch depends on everything that consumed random numbers before it, and it has no state
to save; Lightning's ``DistributedSampler`` pads evaluation splits with duplicates so that every rank
gets the same number of examples, which counts those examples twice in the scores.

* :class:`TrainSampler`: the permutation of an epoch depends only on ``(seed, epoch)`` (length-grouped
  as in HF Trainer's ``group_by_length``, or a plain shuffle), then each rank takes its share (padded
  so that ranks run the same number of steps, as ``DistributedSampler`` does).
* :class:`TokenBudgetSampler`: ``data.max_tokens_per_batch``: batches of varying size whose padded
  size (examples x longest example) stays within a token budget, as fairseq's ``--max-tokens``; short
  texts make large batches, long ones small, so the work per step is even and padding is near zero.
* :class:`EvalSampler`: rank ``r`` of ``R`` reads examples ``r, r+R, ...`` in order, without padding:
  over all ranks every example is evaluated exactly once.
* :class:`ResumableDataLoader`: a DataLoader with ``state_dict``/``load_state_dict`` (Lightning saves
  the state of such loaders in its checkpoints and restores it before the epoch resumes); it counts the
  batches it has handed out in the current epoch and, after a restore, skips that many batches of the
  same epoch's permutation without loading them.

Both samplers subclass ``DistributedSampler`` so that Lightning leaves them in place under DDP instead
of wrapping them in its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


class TrainSampler(DistributedSampler):
    """Training order of one rank: a ``(seed, epoch)`` permutation, optionally grouped by length.

    Args:
        lengths: sequence length of every example (used when ``group_by_length``).
        batch_size: per-rank batch size; length groups are formed over ``batch_size * num_replicas``.
        seed: base seed of the permutation (the run's ``seed``).
        group_by_length: mega-batches sorted by length (transformers' ``get_length_grouped_indices``);
            otherwise a uniform shuffle.
        num_replicas, rank: the DDP world size and this process's global rank.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        group_by_length: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.skip = 0  # examples of this rank's share to leave out at the start of the next iteration

    def permutation(self, epoch: int) -> list[int]:
        """All examples in the order of ``epoch`` (before the split over ranks)."""
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        if self.group_by_length:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            return list(get_length_grouped_indices(self.lengths, self.batch_size * self.num_replicas, generator=g))
        return torch.randperm(len(self.lengths), generator=g).tolist()

    def shard(self, epoch: int) -> list[int]:
        """This rank's examples of ``epoch``, padded (by repeating the first ones) to ``num_samples``."""
        indices = self.permutation(epoch)
        if len(indices) < self.total_size:
            indices += (indices * math.ceil(self.total_size / len(indices)))[: self.total_size - len(indices)]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.shard(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.num_samples


class TokenBudgetSampler(TrainSampler):
    """Training batches (lists of indices) of at most ``max_tokens`` padded tokens each.

    For epoch ``e``: the examples in a ``(seed, e)`` shuffle, stable-sorted by length (longest first, so
    equal lengths are in random order), cut greedily into batches where ``n * longest <= max_tokens``
    (``longest`` rounded up to ``pad_to_multiple_of``), and the batches in a second ``(seed, e)`` shuffle.
    The cut depends only on the sorted lengths, so every epoch has the same number of batches (the
    scheduler's step count holds). Under DDP each rank takes batches ``rank, rank + R, ...`` of the list
    padded, by repeating its first batches, to a multiple of ``R``. The sampler yields one list per batch:
    use it with ``batch_size=None`` and a collate that takes the list (:class:`EpochFeatures` accepts one).

    Args:
        lengths: sequence length of every example, in tokens.
        max_tokens: the budget; at least the longest example (after rounding).
        seed, num_replicas, rank: as :class:`TrainSampler`.
        pad_to_multiple_of: the collate's padding multiple (None: none).

    Raises:
        ConfigError: ``max_tokens`` is below the longest example.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, *, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, pad_to_multiple_of: int | None = None):
        super().__init__(lengths, 1, seed=seed, group_by_length=False, num_replicas=num_replicas, rank=rank)
        from experiments.errors import ConfigError

        self.multiple = pad_to_multiple_of or 1
        self.max_tokens = int(max_tokens)
        longest = max((self._padded(n) for n in self.lengths), default=0)
        if longest > self.max_tokens:
            raise ConfigError(f"data.max_tokens_per_batch={max_tokens} is below the longest training example "
                              f"({longest} tokens): raise it to at least {longest}")
        self.num_batches = len(self.batches(0))
        self.num_samples = math.ceil(self.num_batches / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def _padded(self, n: int) -> int:
        return -(-n // self.multiple) * self.multiple

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` in their training order (before the split over ranks)."""
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        order = sorted(torch.randperm(len(self.lengths), generator=g).tolist(), key=lambda i: -self.lengths[i])
        out: list[list[int]] = []
        for i in order:  # longest first: the first example of a batch sets its padded length
            if out and (len(out[-1]) + 1) * self._padded(self.lengths[out[-1][0]]) <= self.max_tokens:
                out[-1].append(i)
            else:
                out.append([i])
        return [out[j] for j in torch.randperm(len(out), generator=g).tolist()]

    def permutation(self, epoch: int) -> list[list[int]]:  # type: ignore[override]
        """The items :meth:`TrainSampler.shard` splits over the ranks: this sampler's batches."""
        return self.batches(epoch)


class EvalSampler(DistributedSampler):
    """Evaluation order of one rank: examples ``rank, rank + R, ...`` in file order, never padded."""

    def __init__(self, size: int, *, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.size = size
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class EpochFeatures(Dataset):
    """Training features handed out as ``(feature, epoch)``, so that a collate that draws per epoch
    (negatives, augmentation) knows the epoch even in a worker process. :class:`ResumableDataLoader` sets
    ``epoch`` when an epoch's iteration starts; its training loader restarts workers every epoch."""

    def __init__(self, data: Sequence[Any]):
        self.data = data
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int | list[int]) -> tuple[Any, int] | list[tuple[Any, int]]:
        if isinstance(i, list):  # a whole batch (TokenBudgetSampler)
            return [(self.data[j], self.epoch) for j in i]
        return self.data[i], self.epoch


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in checkpoints and restored on resume.

    Needs a :class:`TrainSampler`. The state is ``{"epoch", "batches", "num_replicas"}``: the sampler's
    epoch and how many batches of it were handed out. After :meth:`load_state_dict`, the next iteration
    of that same epoch starts at batch ``batches`` (the permutation is recomputed from the seed, nothing
    is loaded for the skipped batches); an iteration of any other epoch starts at the beginning.

    The iterator is created lazily, at the first batch, so that Lightning's ``set_epoch`` (called after
    it asks for the iterator) is in effect when the sampler computes the order. Iteration draws no
    number from the global torch RNG (``generator`` is reseeded from the sampler's seed and epoch), so
    starting an epoch does not shift the dropout random stream.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)
        self._batches = 0
        self._resume: dict[str, int] | None = None

    def _train_sampler(self) -> TrainSampler | None:
        return self.sampler if isinstance(self.sampler, TrainSampler) else None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing below runs before the first batch is requested.
        sampler = self._train_sampler()
        epoch = sampler.epoch if sampler is not None else 0
        start = 0
        if self._resume is not None and sampler is not None and self._resume["epoch"] == epoch:
            start = min(self._resume["batches"], len(self))
            sampler.skip = start * (self.batch_size or 1)  # batch_size None: the sampler yields batches
            if start:
                log.info("resuming epoch %d at batch %d of %d", epoch, start, len(self))
        self._resume = None
        if sampler is not None:
            self.generator.manual_seed(sampler.seed + epoch)
        if isinstance(self.dataset, EpochFeatures):
            self.dataset.epoch = epoch  # before the worker processes (if any) take their copy
        self._batches = start
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self._train_sampler()
        return {
            "epoch": sampler.epoch if sampler is not None else 0,
            "batches": self._batches,
            "num_replicas": sampler.num_replicas if sampler is not None else 1,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self._train_sampler()
        replicas = sampler.num_replicas if sampler is not None else 1
        if state.get("num_replicas", 1) != replicas:
            log.warning(
                "checkpoint was written with %s processes, this run has %s: the interrupted epoch restarts "
                "from its first batch", state.get("num_replicas"), replicas,
            )
            return
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
