"""Token-budget training batches (``data.max_tokens_per_batch``, TokenBudgetSampler): the cut worked out by
hand, the budget and coverage over random lengths, a constant batch count across epochs, DDP shares, resume
mid-epoch, and a CLI run whose optimizer steps are the batches counted independently."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.errors import ConfigError
from experiments.tasks.sampling import EpochFeatures, ResumableDataLoader, TokenBudgetSampler


def greedy_count(lengths: list[int], budget: int, multiple: int = 1) -> int:
    """Batches of the longest-first greedy cut, counted in plain Python."""
    pad = [-(-n // multiple) * multiple for n in sorted(lengths, reverse=True)]
    count, size, longest = 0, 0, 0
    for n in pad:
        if size and (size + 1) * longest <= budget:
            size += 1
        else:
            count, size, longest = count + 1, 1, n
    return count


def test_the_cut_of_a_small_example_by_hand():
    # Longest first: 10+8 (2 x 10 = 20), 7+3 (2 x 7 = 14; a third would make 21), 3+2.
    lengths = [10, 3, 7, 3, 8, 2]
    sampler = TokenBudgetSampler(lengths, 20, seed=3)
    batches = sampler.batches(0)
    assert sorted(sorted((lengths[i] for i in b), reverse=True) for b in batches) == [[3, 2], [7, 3], [10, 8]]
    assert len(sampler) == 3


def test_padding_multiple_counts_in_the_budget():
    assert len(TokenBudgetSampler([10, 3], 20)) == 1  # 2 x 10
    assert len(TokenBudgetSampler([10, 3], 20, pad_to_multiple_of=8)) == 2  # 2 x 16 > 20


def test_a_budget_below_the_longest_example_is_refused():
    with pytest.raises(ConfigError, match="max_tokens_per_batch=16 is below the longest training example"):
        TokenBudgetSampler([5, 17, 3], 16)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=80), st.integers(0, 200), st.integers(0, 5),
       st.sampled_from([1, 8]))
def test_every_example_once_within_budget_same_count_every_epoch(lengths, extra, seed, multiple):
    padded = [-(-n // multiple) * multiple for n in lengths]
    budget = max(padded) + extra
    sampler = TokenBudgetSampler(lengths, budget, seed=seed, pad_to_multiple_of=multiple)
    expected = greedy_count(lengths, budget, multiple)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) * max(padded[i] for i in b) <= budget for b in batches)
        assert len(batches) == expected == len(sampler)
    assert TokenBudgetSampler(lengths, budget, seed=seed, pad_to_multiple_of=multiple).batches(1) == sampler.batches(1)


def test_two_ranks_take_equal_shares_that_cover_every_batch():
    lengths = [random.Random(1).randint(2, 30) for _ in range(41)]
    shares = [TokenBudgetSampler(lengths, 64, seed=2, num_replicas=2, rank=r).shard(0) for r in range(2)]
    assert len(shares[0]) == len(shares[1])
    assert {i for share in shares for b in share for i in b} == set(range(41))


def test_resumes_mid_epoch_on_the_same_batches():
    lengths = [random.Random(0).randint(3, 40) for _ in range(37)]

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(EpochFeatures(list(range(37))), batch_size=None,
                                   sampler=TokenBudgetSampler(lengths, 80, seed=4),
                                   collate_fn=lambda items: [f for f, _ in items])

    first = loader()
    first.sampler.set_epoch(1)
    epoch1 = list(first)
    assert len(epoch1) == len(first) and sorted(sum(epoch1, [])) == list(range(37))
    first.sampler.set_epoch(1)
    it = iter(first)
    consumed = [next(it) for _ in range(2)]
    fresh = loader()
    fresh.load_state_dict(first.state_dict())
    fresh.sampler.set_epoch(1)
    assert consumed + list(fresh) == epoch1


def test_a_cli_run_takes_one_optimizer_step_per_token_budget_batch(run_cli, tmp_path, tiny_encoder_dir):
    from transformers import AutoTokenizer

    from test_resume import write_texts

    overrides = write_texts(tmp_path / "data", train=30)
    metrics, run_dir = run_cli(*overrides, "data.max_tokens_per_batch=24", "trainer.max_epochs=2",
                               "callbacks.early_stopping.patience=5")
    tok = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    texts = [line.rsplit(",", 1)[0] for line in (tmp_path / "data" / "train.csv").read_text().splitlines()[1:]]
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert len(set(lengths)) > 1 and tok.unk_token_id not in tok(texts[0])["input_ids"]  # real ids, mixed lengths
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert steps == 2 * greedy_count(lengths, 24) and steps != 2 * -(-30 // 32)
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
