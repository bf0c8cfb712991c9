"""Entity-level scores against values worked out by hand (seqeval, strict IOB2)."""

import pytest

from experiments.tasks.ner.metrics import entity_scores


def test_micro_and_per_type_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # Gold entities: PER[0:2], LOC[3], ORG[0], MISC[2:4]. Predicted: PER[0:2] ok, ORG[3] wrong,
    # ORG[0] ok, MISC[2:3] wrong boundary. So 2 correct of 4 predicted and of 4 gold.
    m = entity_scores(gold, pred)["metrics"]
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["f1_PER"] == pytest.approx(1.0)
    assert m["f1_LOC"] == pytest.approx(0.0)
    assert m["f1_ORG"] == pytest.approx(2 / 3)  # P = 1/2, R = 1/1
    assert m["f1_MISC"] == pytest.approx(0.0)
    assert m["accuracy"] == pytest.approx(6 / 8)  # token accuracy, reported apart from F1


def test_strict_mode_does_not_count_an_entity_that_starts_with_i():
    # conlleval's lenient reading would accept I-PER I-PER as PER[0:2]; strict IOB2 does not.
    m = entity_scores([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])["metrics"]
    assert m["f1"] == 0.0 and m["recall"] == 0.0


def test_report_has_per_type_rows_and_length_mismatch_is_an_error():
    report = entity_scores([["B-PER", "O"]], [["B-PER", "O"]])["report"]
    assert "PER" in report and "micro avg" in report
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores([["B-PER", "O"]], [["B-PER"]])
