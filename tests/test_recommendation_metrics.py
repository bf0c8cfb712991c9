"""MIND ranking metrics: hand-worked impressions (ties included) and agreement with MIND's evaluate.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.tasks.recommendation.metrics import (
    auc_score,
    descending_order,
    impression_metrics,
    mrr_score,
    ndcg_score,
    ranking_metrics,
    ranks_from_scores,
    report,
)


# MIND's evaluate.py (msnews.github.io), with one change: the script orders candidates with
# ``np.argsort(y_score)[::-1]``, whose order of tied scores depends on numpy's sort kernel (insertion sort
# up to 16 elements on AVX2 builds, x86-simd-sort on AVX-512 ones). Here the order is written out in plain
# Python with the rule the metric documents (by score descending; of tied candidates, the later first),
# so the reference is the same on every CPU and independent of numpy's argsort.
def tie_rule_order(y_score):
    return np.array(sorted(range(len(y_score)), key=lambda i: (float(y_score[i]), i), reverse=True), dtype=int)


def mind_dcg_score(y_true, y_score, k=10):
    order = tie_rule_order(y_score)
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def mind_ndcg_score(y_true, y_score, k=10):
    best = mind_dcg_score(y_true, y_true, k)
    actual = mind_dcg_score(y_true, y_score, k)
    return actual / best


def mind_mrr_score(y_true, y_score):
    order = tie_rule_order(y_score)
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return np.sum(rr_score) / np.sum(y_true)


def test_hand_worked_impression_without_ties():
    y, s = [1, 0, 0, 1], [0.9, 0.8, 0.7, 0.1]
    # Pairs (clicked, non-clicked): 0.9 beats both, 0.1 beats none: 2 of 4.
    assert auc_score(y, s) == pytest.approx(0.5)
    # Clicked at ranks 1 and 4: (1/1 + 1/4) / 2.
    assert mrr_score(y, s) == pytest.approx(0.625)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_score(y, s, 5) == pytest.approx((1 + 1 / math.log2(5)) / ideal)
    assert ndcg_score(y, s, 10) == pytest.approx((1 + 1 / math.log2(5)) / ideal)


def test_ties_count_half_in_auc_and_rank_the_later_candidate_first():
    # The clicked candidate ties with an earlier non-clicked one: AUC (0.5 + 1) / 2; the later of two
    # tied candidates is ranked first (np.argsort(...)[::-1] on a stable sort), so the click is rank 1.
    assert auc_score([0, 1, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    assert mrr_score([0, 1, 0], [0.5, 0.5, 0.2]) == pytest.approx(1.0)
    assert ndcg_score([0, 1, 0], [0.5, 0.5, 0.2], 5) == pytest.approx(1.0)
    # The click is the earlier of the tied pair: rank 2.
    assert auc_score([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    assert mrr_score([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.5)
    assert ndcg_score([1, 0, 0], [0.5, 0.5, 0.2], 5) == pytest.approx(1 / math.log2(3))
    # Everything tied (a two-tower user without history): AUC 0.5, the first candidate ranked last.
    assert auc_score([1, 0, 0, 0], [0.0] * 4) == pytest.approx(0.5)
    assert mrr_score([1, 0, 0, 0], [0.0] * 4) == pytest.approx(0.25)
    assert ranks_from_scores([0.0] * 4) == [4, 3, 2, 1]
    assert descending_order([0.5, 0.5, 0.2]).tolist() == [1, 0, 2]


def test_ndcg_cut_off():
    y = [0] * 12
    y[6] = 1
    s = [12 - i for i in range(12)]  # candidate i at rank i + 1
    assert ndcg_score(y, s, 5) == 0.0
    assert ndcg_score(y, s, 10) == pytest.approx(1 / math.log2(8))
    assert mrr_score(y, s) == pytest.approx(1 / 7)


@pytest.mark.parametrize("seed", range(5))
def test_matches_mind_script_and_sklearn(seed):
    """Random impressions of up to 40 candidates with many ties: the same values as the MIND script (with the
    explicit tie rule) and as scikit-learn's AUC, on any CPU."""
    rng = np.random.default_rng(seed)
    sklearn = pytest.importorskip("sklearn.metrics")
    for _ in range(60):
        n = int(rng.integers(2, 41))
        y = rng.integers(0, 2, n).astype(float)
        y[0], y[1] = 1.0, 0.0
        s = rng.integers(0, 4, n) / 4.0  # few distinct values: ties everywhere
        assert mrr_score(y, s) == pytest.approx(mind_mrr_score(y, s))
        for k in (5, 10):
            assert ndcg_score(y, s, k) == pytest.approx(mind_ndcg_score(y, s, k))
        assert auc_score(y, s) == pytest.approx(sklearn.roc_auc_score(y, s))


def test_every_permutation_of_tied_candidates_follows_the_tie_rule():
    """Under every order of the candidates of an impression full of ties, MRR and nDCG are what the tie rule
    gives by hand for that order, and AUC does not change (it counts a tie as 1/2)."""
    import itertools

    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    s = np.array([0.5, 0.5, 0.5, 0.9, 0.5])
    auc = auc_score(y, s)
    # Each click ties with the two 0.5 negatives (1/2 each) and loses to the 0.9 one: (1 + 1) / (2 * 3).
    assert auc == pytest.approx(1 / 3)
    for perm in itertools.permutations(range(5)):
        yp, sp = y[list(perm)], s[list(perm)]
        # The 0.9 candidate is first; the tied 0.5 ones follow, the later position first.
        tied = [i for i in range(5) if sp[i] == 0.5][::-1]
        ranks = {i: r for r, i in enumerate(tied, start=2)}
        clicked = [ranks[i] for i in range(5) if yp[i] == 1.0]
        assert mrr_score(yp, sp) == pytest.approx(sum(1 / r for r in clicked) / 2)
        dcg = sum(1 / math.log2(r + 1) for r in clicked if r <= 5)
        assert ndcg_score(yp, sp, 5) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
        assert auc_score(yp, sp) == pytest.approx(auc)
        assert ranks_from_scores(sp) == [1 if sp[i] == 0.9 else ranks[i] for i in range(5)]


def test_submission_ranks_score_like_raw_scores():
    """MIND's script scores a submission as 1 / rank: our ranks give the same MRR and nDCG as the scores."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n).astype(float)
        y[0], y[1] = 1.0, 0.0
        s = (rng.integers(0, 5, n) / 5.0).tolist()
        ranks = ranks_from_scores(s)
        assert sorted(ranks) == list(range(1, n + 1))
        inv = [1.0 / r for r in ranks]
        assert mrr_score(y, inv) == pytest.approx(mrr_score(y, s))
        assert ndcg_score(y, inv, 10) == pytest.approx(ndcg_score(y, s, 10))


def test_impressions_without_click_or_non_click_are_excluded_and_counted():
    assert impression_metrics([0, 0], [0.1, 0.2]) is None
    assert impression_metrics([1, 1], [0.1, 0.2]) is None
    with pytest.raises(ValueError):
        auc_score([1, 1], [0.1, 0.2])
    m = ranking_metrics([
        ([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.1]),  # auc 0.5, mrr 0.625
        ([0, 1, 0], [0.5, 0.5, 0.2]),  # auc 0.75, mrr 1
        ([0, 0, 0], [0.1, 0.2, 0.3]),
        ([1, 1], [0.3, 0.4]),
    ])
    assert m["impressions"] == 2 and m["excluded_impressions"] == 2
    assert m["auc"] == pytest.approx(0.625)
    assert m["mrr"] == pytest.approx(0.8125)
    assert "excluded_impressions" in report(m)
    empty = ranking_metrics([([0, 0], [0.1, 0.2])])
    assert math.isnan(empty["auc"]) and empty["excluded_impressions"] == 1


def test_ranks_are_one_based_positions_by_descending_score():
    assert ranks_from_scores([0.1, 0.9, 0.5]) == [3, 1, 2]
    assert ranks_from_scores([2.0]) == [1]
