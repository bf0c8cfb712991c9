"""Entity-level scores: values worked out by hand under both protocols, seqeval as the reference on random
inputs (degenerate ones included), and constrained Viterbi decoding against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from experiments.tasks.ner.decoding import allowed_transitions, decode_words, is_valid_iob2, viterbi
from experiments.tasks.ner.metrics import entity_scores

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def test_micro_and_per_type_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # Gold entities: PER[0:2], LOC[3], ORG[0], MISC[2:4]. Predicted: PER[0:2] ok, ORG[3] wrong,
    # ORG[0] ok, MISC[2:3] wrong boundary. So 2 correct of 4 predicted and of 4 gold, in both protocols
    # (every sequence is valid IOB2).
    m = entity_scores(gold, pred)["metrics"]
    for suffix in ("", "_strict"):
        assert m[f"precision{suffix}"] == pytest.approx(0.5)
        assert m[f"recall{suffix}"] == pytest.approx(0.5)
        assert m[f"f1{suffix}"] == pytest.approx(0.5)
        assert m[f"f1{suffix}_PER"] == pytest.approx(1.0)
        assert m[f"f1{suffix}_LOC"] == pytest.approx(0.0)
        assert m[f"f1{suffix}_ORG"] == pytest.approx(2 / 3)  # P = 1/2, R = 1/1
        assert m[f"f1{suffix}_MISC"] == pytest.approx(0.0)
    assert m["accuracy"] == pytest.approx(6 / 8)  # token accuracy, reported apart from F1


def test_an_entity_that_starts_with_i_counts_in_conlleval_and_not_in_strict_mode():
    # conlleval reads I-PER I-PER as PER[0:2], which matches the gold; strict IOB2 reads no entity.
    m = entity_scores([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])["metrics"]
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    assert (m["precision_strict"], m["recall_strict"], m["f1_strict"]) == (0.0, 0.0, 0.0)
    # I-LOC after O: conlleval's LOC[1] is right; strict predicts nothing (P = 0/0 = 0, R = 0/1).
    m = entity_scores([["O", "B-LOC", "O"]], [["O", "I-LOC", "O"]])["metrics"]
    assert m["f1"] == 1.0 and m["f1_strict"] == 0.0 and m["f1_strict_LOC"] == 0.0


def test_a_type_change_inside_an_entity():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-LOC", "O", "B-LOC"]]
    m = entity_scores(gold, pred)["metrics"]
    # conlleval: predicted PER[0], LOC[1], LOC[3]; only LOC[3] is right. P = 1/3, R = 1/2, F1 = 0.4.
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.4)
    assert m["f1_LOC"] == pytest.approx(2 * 0.5 * 1 / (0.5 + 1))  # P 1/2, R 1/1
    # strict: predicted PER[0] (ended by the I-LOC, which is dropped) and LOC[3]. P = 1/2, R = 1/2.
    assert m["precision_strict"] == pytest.approx(0.5) and m["recall_strict"] == pytest.approx(0.5)
    assert m["f1_strict"] == pytest.approx(0.5)


def test_degenerate_splits_give_numbers():
    for gold, pred in [
        ([["O", "O"]], [["O", "O"]]),  # no entity anywhere
        ([], []),  # no sentence
        ([["O"]], [["B-PER"]]),  # an entity only in the predictions
        ([["B-PER"]], [["O"]]),  # only in the gold
        ([["B-PER", "O"], ["O", "O"]], [["B-LOC", "B-LOC"], ["B-LOC", "B-LOC"]]),  # a type only predicted, all the same
    ]:
        result = entity_scores(gold, pred)
        assert all(isinstance(v, float) and math.isfinite(v) for v in result["metrics"].values())
        assert "micro avg" in result["report"]
    m = entity_scores([["O"]], [["B-PER"]])["metrics"]
    assert (m["precision"], m["recall"], m["f1"], m["f1_PER"]) == (0.0, 0.0, 0.0, 0.0)


def test_unseen_gold_types_stay_in_the_gold_and_the_report_says_so():
    result = entity_scores([["B-PER", "O", "B-PRODUCT"]], [["B-PER", "O", "O"]], unseen_types=["PRODUCT"])
    assert result["metrics"]["recall"] == pytest.approx(0.5)  # the PRODUCT entity is a miss
    assert "PRODUCT (1)" in result["report"]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores([["B-PER", "O"]], [["B-PER"]])
    with pytest.raises(ValueError, match="sentences"):
        entity_scores([["O"]], [])


sentences = st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8), min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_both_protocols_match_seqeval_on_random_tags(data):
    gold = data.draw(sentences)
    pred = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(g), max_size=len(g))) for g in gold]
    m = entity_scores(gold, pred)["metrics"]
    for suffix, kw in (("", {}), ("_strict", {"mode": "strict", "scheme": IOB2})):
        if not gold:
            assert m[f"f1{suffix}"] == 0.0
            continue
        assert m[f"precision{suffix}"] == pytest.approx(precision_score(gold, pred, zero_division=0, **kw))
        assert m[f"recall{suffix}"] == pytest.approx(recall_score(gold, pred, zero_division=0, **kw))
        assert m[f"f1{suffix}"] == pytest.approx(f1_score(gold, pred, zero_division=0, **kw))
        per_type = classification_report(gold, pred, output_dict=True, zero_division=0, **kw)
        for name, row in per_type.items():
            if not name.endswith("avg"):
                assert m[f"f1{suffix}_{name}"] == pytest.approx(row["f1-score"])


def _brute_force(scores: torch.Tensor, labels: list[str]) -> float:
    best = -math.inf
    for seq in itertools.product(range(len(labels)), repeat=scores.shape[0]):
        if is_valid_iob2([labels[i] for i in seq]):
            best = max(best, sum(float(scores[t, i]) for t, i in enumerate(seq)))
    return best


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_viterbi_finds_the_best_valid_sequence(n_words, seed):
    labels = TAGS[:5]
    scores = torch.randn(n_words, len(labels), generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
    (tags,) = decode_words([scores], labels, "viterbi")
    assert is_valid_iob2(tags)
    total = sum(float(scores[t, labels.index(tag)]) for t, tag in enumerate(tags))
    assert total == pytest.approx(_brute_force(scores, labels), abs=1e-5)
    # On Viterbi output the two protocols agree.
    m = entity_scores([tags], [tags])["metrics"]
    assert m["f1"] == m["f1_strict"]


def test_viterbi_keeps_a_valid_argmax_and_repairs_an_invalid_one():
    labels = ["O", "B-PER", "I-PER"]
    logp = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]).log()
    assert decode_words([logp], labels, "viterbi") == decode_words([logp], labels, "argmax") == [["B-PER", "I-PER"]]
    # Argmax says O I-PER (invalid); the best valid sequence is B-PER I-PER: 0.45 * 0.8 > 0.5 * 0.1 (O O).
    logp = torch.tensor([[0.5, 0.45, 0.05], [0.1, 0.1, 0.8]]).log()
    assert decode_words([logp], labels, "argmax") == [["O", "I-PER"]]
    assert decode_words([logp], labels, "viterbi") == [["B-PER", "I-PER"]]


def test_a_word_without_scores_is_o_and_its_neighbours_stay_valid():
    labels = ["O", "B-PER", "I-PER"]
    nan = float("nan")
    logp = torch.tensor([[0.1, 0.8, 0.1], [nan, nan, nan], [0.1, 0.2, 0.7]]).log()
    # I-PER cannot follow the forced O: the best allowed tag of the third word is B-PER (0.2 > 0.1).
    assert decode_words([logp], labels, "viterbi") == [["B-PER", "O", "B-PER"]]
    assert decode_words([logp], labels, "argmax") == [["B-PER", "O", "I-PER"]]


def test_allowed_transitions_and_batched_viterbi_with_padding():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    start, trans = allowed_transitions(labels)
    assert start.tolist() == [True, True, False, True, False]
    assert trans[:, 2].tolist() == [False, True, True, False, False]  # I-PER after B-PER or I-PER only
    assert trans[:, 4].tolist() == [False, False, False, True, True]
    scores = torch.randn(3, 5, 5).log_softmax(-1)
    lengths = [5, 2, 0]
    out = viterbi(scores, lengths, start, trans)
    assert [len(o) for o in out] == lengths
    for i in range(2):  # batched = one at a time
        assert out[i] == viterbi(scores[i : i + 1, : lengths[i]], [lengths[i]], start, trans)[0]


def test_entity_records_have_text_type_word_and_char_offsets_and_confidence():
    from experiments.tasks.ner.decoding import entity_records

    words = ["John", "Smith", "lives", "in", "New", "York"]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    conf = [0.9, 0.7, 1.0, 1.0, 0.6, 0.8]
    [per, loc] = entity_records(words, tags, conf)
    assert per == {"text": "John Smith", "type": "PER", "start": 0, "end": 2, "start_char": 0, "end_char": 10,
                   "confidence": pytest.approx(0.8)}
    sentence = " ".join(words)
    assert sentence[loc["start_char"]:loc["end_char"]] == "New York" and (loc["start"], loc["end"]) == (4, 6)
    assert loc["confidence"] == pytest.approx(0.7)
    assert entity_records(["a"], ["O"]) == []
