"""Answer selection (task=support_response): metrics against hand-worked rankings, BM25 by hand, the
seeded split, R10 negatives, and both models end to end on the tiny BERT (train, test, predict)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.config import resource_path
from experiments.errors import DataError
from experiments.tasks.recommendation.answer_metrics import answer_selection_metrics, gold_ranks
from experiments.tasks.recommendation.answers import bm25_scores, r10_negatives, read_pairs

BITEXT = resource_path("bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv")


def test_metrics_on_a_hand_worked_ranking_with_ties():
    scores = np.array([[3.0, 1.0, 2.0],   # gold 0 ranked 1
                       [1.0, 1.0, 0.0],   # gold 1 ties with answer 0: ranked 2 (gold last among equals)
                       [0.0, 5.0, 5.0]])  # gold 0 below two tied answers: ranked 3
    assert gold_ranks(scores, [0, 1, 0]).tolist() == [1, 2, 3]
    r10 = np.array([[2.0] + [1.0] * 9, [1.0, 1.0] + [0.0] * 8, [0.0] + [-1.0] * 9])  # hit, tie = miss, hit
    m = answer_selection_metrics(scores, [0, 1, 0], pool_intents=["a", "b", "a"],
                                 message_intents=["a", "b", "b"], r10_scores=r10)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@5"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert m["r10@1"] == pytest.approx(2 / 3)
    # Top answers: row 0 -> 0 ("a", match), row 1 -> first of the tied maxima, 0 ("a" vs "b"), row 2 -> 1 ("b").
    assert m["intent_match@1"] == pytest.approx(2 / 3)
    assert (m["messages"], m["pool"]) == (3, 3)


@given(st.integers(1, 30), st.integers(1, 8), st.floats(-1e6, 1e6, allow_nan=False))
def test_a_constant_scorer_ranks_every_gold_last(pool, messages, value):
    scores = np.full((messages, pool), value)
    m = answer_selection_metrics(scores, [0] * messages, pool_intents=["x"] * pool, message_intents=["x"] * messages)
    assert m["mrr"] == pytest.approx(1 / pool)
    assert m["recall@1"] == (1.0 if pool == 1 else 0.0)
    assert m["recall@5"] == (1.0 if pool <= 5 else 0.0)


@given(st.lists(st.lists(st.integers(-3, 3), min_size=4, max_size=4), min_size=1, max_size=6),
       st.permutations(range(4)))
def test_ranks_do_not_depend_on_the_pool_order(rows, perm):
    scores = np.array(rows, dtype=float)
    gold = [i % 4 for i in range(len(rows))]
    inverse = np.argsort(perm)
    assert gold_ranks(scores[:, perm], [int(inverse[g]) for g in gold]).tolist() == gold_ranks(scores, gold).tolist()


def test_metrics_refuse_nan_and_empty_input():
    with pytest.raises(ValueError, match="NaN"):
        gold_ranks(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="no message"):
        answer_selection_metrics(np.zeros((0, 3)), [], pool_intents=["a"] * 3, message_intents=[])


def test_bm25_matches_the_formula_worked_by_hand():
    # N = 2 documents, "a" in both: idf = ln(1 + 0.5 / 2.5); lengths 2 and 3, mean 2.5; k1 = 1.2, b = 0.75.
    idf = math.log(1.2)
    doc0 = idf * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / 2.5))
    doc1 = idf * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3 / 2.5))
    assert bm25_scores(["A!"], ["a b", "a a c"]).tolist() == [pytest.approx([doc0, doc1])]
    assert bm25_scores(["zzz"], ["a b"]).tolist() == [[0.0]]


def test_r10_negatives_are_nine_distinct_non_gold_answers_and_seeded():
    negs = r10_negatives(20, [3, 7, 0], seed=5)
    assert negs == r10_negatives(20, [3, 7, 0], seed=5) and negs != r10_negatives(20, [3, 7, 0], seed=6)
    for g, n in zip([3, 7, 0], negs, strict=True):
        assert len(set(n)) == 9 and g not in n and all(0 <= j < 20 for j in n)
    with pytest.raises(ValueError, match="at least 10"):
        r10_negatives(9, [0], seed=0)


def test_the_bitext_split_is_seeded_stratified_disjoint_and_the_intent_tasks_split(tmp_path, tiny_tokenizer):
    from experiments.tasks.recommendation.answer_datamodule import AnswerSelectionDataModule
    from experiments.tasks.splits import stratified_split

    def split(seed, out=None):
        dm = AnswerSelectionDataModule(tiny_tokenizer, BITEXT, split_seed=seed, output_dir=out)
        return {k: [p.id for p in dm._read(k)] for k in ("train", "validation", "test")}, dm

    ids, dm = split(3, str(tmp_path))
    assert json.loads((tmp_path / "split_ids.json").read_text()) == ids
    assert ids == split(3)[0] and ids != split(4)[0]
    assert sum(map(len, ids.values())) == 4514 and not set(ids["train"]) & set(ids["test"])
    by_intent = {}
    for k in ids:
        for p in dm._read(k):
            by_intent.setdefault(p.intent, {}).setdefault(k, 0)
            by_intent[p.intent][k] += 1
    for counts in by_intent.values():  # largest-remainder rounding: each split within 1 of its share
        n = sum(counts.values())
        assert all(abs(counts[k] - n * f) < 1 for k, f in zip(ids, (0.8, 0.1, 0.1), strict=True))
    intents = {k: {p.intent for p in dm._read(k)} for k in ids}
    assert intents["train"] == intents["validation"] == intents["test"] and len(intents["test"]) == 27
    pairs = read_pairs(BITEXT)
    counts = {}
    for p in pairs:
        counts[p.answer] = counts.get(p.answer, 0) + 1
    train_answers = {p.answer for p in dm._read("train")}
    assert not {p.answer for p in dm._read("test") if counts[p.answer] == 1} & train_answers
    parts = stratified_split([p.intent for p in pairs], (0.8, 0.1, 0.1), seed=3)  # task=support_intent's carve
    assert [[pairs[i].id for i in part] for part in parts] == list(ids.values())


def test_same_intent_negatives_share_the_message_intent(tmp_path, tiny_tokenizer):
    from experiments.tasks.recommendation.answer_datamodule import AnswerSelectionDataModule

    data = write_pairs(tmp_path / "pairs.csv")
    dm = AnswerSelectionDataModule(tiny_tokenizer, str(data), architecture="cross_encoder", negatives=2,
                                   negatives_from="intent", batch_size=4, seed=1)
    dm.setup("fit")
    pairs = dm._read("train")
    batch = dm.train_collate([(f, 0) for f in dm.features["train"][:4]])
    assert batch["pairs"]["input_ids"].shape[0] == 4 * 3
    texts = [tiny_tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["pairs"]["input_ids"]]
    for n, f in enumerate(dm.features["train"][:4]):
        intent = pairs[f["example_id"]].intent
        group = texts[3 * n:3 * n + 3]
        assert all(f"the {intent} answer" in t for t in group)  # gold and both negatives: the same intent
        assert len(set(group)) == 3  # distinct answers, the gold first
    assert dm.train_collate([(f, 0) for f in dm.features["train"][:4]])["pairs"]["input_ids"].equal(
        batch["pairs"]["input_ids"])


def test_a_pair_file_without_answers_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("instruction,response,intent\nhi,hello,greet\nbye,,greet\n")
    with pytest.raises(DataError, match=r"pairs.csv:3: empty answer in 'response'"):
        read_pairs(path)


def write_pairs(path):
    words = ["refund", "order", "card", "cancel"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instruction", "response", "intent"])
        for n in range(120):
            intent = words[n % 4]
            w.writerow([f"where is my {intent} {n}", f"the {intent} answer number {n} {{{{Order Number}}}}", intent])
    return path


@pytest.mark.parametrize("answer_model", ["bi_encoder", "cross_encoder"])
def test_both_models_train_test_and_predict_top_answers(run_cli, tmp_path, answer_model):
    data = write_pairs(tmp_path / "pairs.csv")
    metrics, run_dir = run_cli("task=support_response", f"answer_model={answer_model}", f"data.train_file={data}",
                               "debug=limit", "data.batch_size=4", "data.eval_batch_size=8",
                               "trainer.limit_val_batches=null", "trainer.limit_test_batches=null")
    for key in ("test/recall@1", "test/recall@5", "test/mrr", "test/r10@1", "test/intent_match@1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/messages"] == 12  # 10% of 120, per intent
    assert "recall@1" in (run_dir / "classification_report.txt").read_text()
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(1 <= r["gold_rank"] <= 12 for r in rows)
    assert all(len(r["answers"]) == 10 and "{{Order Number}}" in r["answers"][0]["answer"] for r in rows)
    recall1 = np.mean([r["gold_rank"] == 1 for r in rows])
    assert metrics["test/recall@1"] == pytest.approx(recall1)

    messages = tmp_path / "messages.jsonl"
    messages.write_text(json.dumps({"instruction": "cancel my card"}) + "\n")
    run_cli("task=support_response", f"answer_model={answer_model}", "mode=predict",
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"data.predict_file={messages}",
            f"data.train_file={data}", "data.top_k=3", run_dir=tmp_path / "pred")
    (pred,) = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert pred["message"] == "cancel my card" and len(pred["answers"]) == 3
    scores = [a["score"] for a in pred["answers"]]
    assert scores == sorted(scores, reverse=True)
