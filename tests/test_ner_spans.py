"""NER from character-span annotations: span -> word IOB2 on hand-made rows, every malformed-span error,
the doccano / Label Studio / CSV forms, carved splits, and predictions mapped back to character offsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import resource_path
from experiments.errors import DataError
from experiments.tasks.ner.spans import Span, SpanError, SpanOptions, read_span_file, spans_to_iob2

BITEXT = resource_path("bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv")


def test_a_multi_word_span_becomes_b_then_i():
    words, offsets, tags, snapped = spans_to_iob2("I live in New York City.", [Span(10, 23, "LOC")])
    assert words == ["I", "live", "in", "New", "York", "City", "."]
    assert tags == ["O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert offsets[3] == (10, 13) and offsets[5] == (19, 23) and snapped == 0


def test_punctuation_next_to_a_span_is_its_own_word_outside_the_span():
    text = "Order #12345, please!"
    words, _, tags, _ = spans_to_iob2(text, [Span(7, 12, "order_id")])
    assert list(zip(words, tags, strict=True)) == [
        ("Order", "O"), ("#", "O"), ("12345", "B-order_id"), (",", "O"), ("please", "O"), ("!", "O")]


def test_non_ascii_offsets_are_code_points():
    text = "Café Münster liegt in Zürich."
    start = text.index("Zürich")
    words, offsets, tags, _ = spans_to_iob2(text, [Span(0, 12, "ORG"), Span(start, start + 6, "LOC")])
    assert tags == ["B-ORG", "I-ORG", "O", "O", "B-LOC", "O"]
    assert [text[a:b] for a, b in offsets] == words


def test_two_adjacent_spans_of_one_type_stay_two_entities():
    _, _, tags, _ = spans_to_iob2("Paris London", [Span(6, 12, "LOC"), Span(0, 5, "LOC")])
    assert tags == ["B-LOC", "B-LOC"]


@pytest.mark.parametrize(("spans", "message"), [
    ([Span(0, 3, "X")], "does not fall on word boundaries"),  # cuts "order"
    ([Span(0, 5, "A"), Span(0, 9, "B")], "overlaps"),
    ([Span(6, 40, "X")], "ends past the end of the text (15 characters)"),
    ([Span(6, 6, "X")], "start must be >= 0 and end > start"),
    ([Span(8, 6, "X")], "start must be >= 0 and end > start"),
    ([Span(-1, 5, "X")], "start must be >= 0"),
    ([Span(0, 5, " ")], "empty label"),
    ([Span(5, 6, "X")], "covers no word"),
])
def test_malformed_spans_are_errors(spans, message):
    with pytest.raises(SpanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spans_to_iob2("order 123 today", spans)


def test_snap_widens_cut_spans_and_cuts_spans_past_the_end_and_counts_them():
    words, _, tags, snapped = spans_to_iob2("cancel order732201349959", [Span(12, 30, "order_id")], snap=True)
    assert words == ["cancel", "order732201349959"] and tags == ["O", "B-order_id"] and snapped == 1
    with pytest.raises(SpanError, match="overlaps"):  # overlaps are never snapped
        spans_to_iob2("a b", [Span(0, 1, "X"), Span(0, 3, "Y")], snap=True)


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def tags_of(path: Path, options: SpanOptions | None = None) -> list[list[str]]:
    return [s.tags for s in read_span_file(path, options)[0]]


def test_doccano_label_studio_and_our_forms_read_the_same(tmp_path):
    text = "cancel order 123 for John Smith"
    want = [["O", "O", "B-order_id", "O", "B-PER", "I-PER"]]
    forms = {
        "doccano.jsonl": [{"text": text, "label": [[13, 16, "order_id"], [21, 31, "PER"]]}],
        "doccano_rel.jsonl": [{"text": text, "entities": [
            {"id": 1, "start_offset": 13, "end_offset": 16, "label": "order_id"},
            {"id": 2, "start_offset": 21, "end_offset": 31, "label": "PER"}], "relations": []}],
        "ours.jsonl": [{"text": text, "spans": [{"start": 13, "end": 16, "label": "order_id"},
                                                {"start": 21, "end": 31, "label": "PER"}]}],
        "label_studio_min.jsonl": [{"text": text, "label": [
            {"start": 13, "end": 16, "text": "123", "labels": ["order_id"]},
            {"start": 21, "end": 31, "text": "John Smith", "labels": ["PER"]}]}],
    }
    for name, records in forms.items():
        assert tags_of(write_lines(tmp_path / name, records)) == want, name
    studio = [{"id": 7, "data": {"text": text}, "annotations": [
        {"was_cancelled": True, "result": []},
        {"result": [{"type": "labels", "value": {"start": 13, "end": 16, "labels": ["order_id"]}},
                    {"type": "labels", "value": {"start": 21, "end": 31, "labels": ["PER"]}}]}]}]
    path = tmp_path / "studio.json"
    path.write_text(json.dumps(studio))
    assert tags_of(path) == want


def test_csv_with_one_span_per_row_and_csv_with_a_json_spans_column(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text('text,kind,a,b\n"where is order 12, please",order_id,15,17\nhello there,,,\n')
    opts = SpanOptions(label_column="kind", start_column="a", end_column="b")
    sentences, strata = read_span_file(rows, opts)
    assert [s.tags for s in sentences] == [["O", "O", "O", "B-order_id", "O", "O"], ["O", "O"]]
    assert [s.id for s in sentences] == ["2", "3"] and strata == ["order_id", "O"]
    col = tmp_path / "col.csv"
    col.write_text('text,spans\nparis rose,"[[0, 5, ""LOC""]]"\nno entity,[]\n')
    assert tags_of(col) == [["B-LOC", "O"], ["O", "O"]]


@pytest.mark.parametrize(("record", "message"), [
    ({"text": "order 123", "label": [[0, 3, "X"]]}, ":2: .*does not fall on word boundaries"),
    ({"text": "order 123", "label": [[0, 5, "X"], [0, 9, "Y"]]}, ":2: .*overlaps"),
    ({"text": "order 123", "label": [[6, 12, "X"]]}, ":2: .*ends past the end of the text"),
    ({"text": "order 123", "label": [[6, "x", "X"]]}, ":2: .*end is 'x'; expected an integer offset"),
    ({"text": "order 123", "label": [[6, 9]]}, r":2: .*expected \[start, end, label\]"),
    ({"text": "order 123"}, ":2: no spans"),
    ({"text": "", "label": []}, ":2: text in 'text'"),
    ({"words": "order 123", "label": []}, ":2: no key 'text'"),
])
def test_a_malformed_record_is_one_data_error_naming_file_and_line(tmp_path, record, message):
    path = write_lines(tmp_path / "bad.jsonl", [{"text": "fine", "label": []}, record])
    with pytest.raises(DataError, match=message) as info:
        read_span_file(path)
    assert str(path) in str(info.value)


def test_csv_errors_name_the_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,kind,a,b\nok,,,\norder 123,X,6,\n")
    with pytest.raises(DataError, match="bad.csv:3: .*expected all three filled or all three empty"):
        read_span_file(path, SpanOptions(label_column="kind", start_column="a", end_column="b"))


def test_bitext_slots_read_with_snapping_and_carve_the_same_split_as_the_intent_task(tmp_path):
    from experiments.tasks.classification.readers import read_bitext
    from experiments.tasks.splits import stratified_split

    opts = SpanOptions(text_column="instruction", label_column="entity_type", start_column="start_offset",
                       end_column="end_offset", stratify_column="intent", snap=True)
    sentences, strata = read_span_file(BITEXT, opts)
    assert len(sentences) == 4514
    # 1,686 rows carry one slot each (MANIFEST.md); none is lost by snapping.
    assert sum(t.startswith("B-") for s in sentences for t in s.tags) == 1686
    with pytest.raises(DataError, match=r"csv:\d+: .*span .*(does not fall on word boundaries|ends past the end)"):
        read_span_file(BITEXT, SpanOptions(**{**opts.__dict__, "snap": False}))
    intents = read_bitext(BITEXT)
    ner_parts = stratified_split(strata, (0.8, 0.1, 0.1), seed=7)
    intent_parts = stratified_split([e.label for e in intents], (0.8, 0.1, 0.1), seed=7)
    assert [[sentences[i].id for i in p] for p in ner_parts] == [[intents[i].id for i in p] for p in intent_parts]


SPAN_TRAIN = [
    {"text": "john smith lives in paris.", "label": [[0, 10, "PER"], [20, 25, "LOC"]]},
    {"text": "apple shares rose", "label": [[0, 5, "ORG"]]},
    {"text": "the bank of america", "label": [[12, 19, "ORG"]]},
    {"text": "where is my order?", "label": []},
]


def test_a_span_file_trains_carves_splits_and_predicts_character_offsets(run_cli, tmp_path):
    train = write_lines(tmp_path / "train.jsonl", SPAN_TRAIN * 5)
    metrics, run_dir = run_cli("debug=limit", f"data.train_file={train}", "data.validation_file=null",
                               "data.test_file=null", "data.batch_size=2")
    assert "test/f1" in metrics
    ids = json.loads((run_dir / "split_ids.json").read_text())
    assert sum(len(v) for v in ids.values()) == 20 and set(ids) == {"train", "validation", "test"}
    assert not set(ids["train"]) & set(ids["test"])
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} <= set(ids["test"])
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start_char"]:e["end_char"]] == e["text"]

    # Predict from the checkpoint on a span-format file without spans: entities come back as character spans.
    pred_in = write_lines(tmp_path / "messages.jsonl", [{"text": "john  smith, in paris!"}])
    run_cli("mode=predict", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"data.predict_file={pred_in}",
            "data.train_file=null", run_dir=tmp_path / "pred")
    (pred,) = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert pred["words"] == ["john", "smith", ",", "in", "paris", "!"]
    for e in pred["entities"]:
        assert pred["text"][e["start_char"]:e["end_char"]] == e["text"]
