"""Tests of the sentence-classification readers and the stratified split (hand-made files in tmp_path)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from experiments.errors import ConfigError, DataError
from experiments.tasks.classification.readers import (
    Example,
    phrasebank_file,
    read_banking77,
    read_bitext,
    read_clinc150,
    read_fiqa,
    read_phrasebank,
    read_table,
    read_text_file,
    stratified_split,
    write_split_ids,
)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------------------ text files


def test_read_text_file_latin1_fallback_and_bom(tmp_path):
    latin = write(tmp_path / "l.txt", "Sepp\u00e4l\u00e4 \u00a3 5\n".encode("latin-1"))
    assert read_text_file(latin) == "Sepp\u00e4l\u00e4 \u00a3 5\n"
    bom = write(tmp_path / "b.txt", b"\xef\xbb\xbfna\xc3\xafve\r\n")
    assert read_text_file(bom) == "na\u00efve\r\n"


def test_read_text_file_nul_and_missing(tmp_path):
    f = write(tmp_path / "u16.txt", "ab\ncd".encode("utf-16-le"))
    with pytest.raises(DataError) as err:
        read_text_file(f)
    assert err.value.line == 1 and "NUL" in err.value.message
    f2 = write(tmp_path / "late.txt", b"a\nb\nc\x00\n")
    with pytest.raises(DataError) as err:
        read_text_file(f2)
    assert err.value.line == 3
    with pytest.raises(DataError) as err:
        read_text_file(tmp_path / "absent.txt")
    assert err.value.line is None


# ---------------------------------------------------------------------------------------- PhraseBank


def test_phrasebank_latin1_accent_and_at_sign(tmp_path):
    lines = [
        "Operating profit rose to EUR 5 mn .@positive",
        "Sales at Sepp\u00e4l\u00e4 fell .@negative",
        "Write to ir@company.fi for details .@neutral",
        "",
    ]
    f = write(tmp_path / "Sentences_50Agree.txt", "\r\n".join(lines).encode("latin-1"))
    ex = read_phrasebank(f)
    assert ex == [
        Example("Operating profit rose to EUR 5 mn .", "positive", None, "1", 1),
        Example("Sales at Sepp\u00e4l\u00e4 fell .", "negative", None, "2", 2),
        Example("Write to ir@company.fi for details .", "neutral", None, "3", 3),
    ]


def test_phrasebank_utf8_with_bom(tmp_path):
    f = write(tmp_path / "s.txt", b"\xef\xbb\xbfShares in \xc3\x85land gained .@positive\n")
    (ex,) = read_phrasebank(f)
    assert ex.text == "Shares in \u00c5land gained ." and ex.label == "positive" and ex.id == "1"


@pytest.mark.parametrize(
    ("bad", "words"),
    [("No label here", "no '@'"), ("Good news .@great", "'great'"), ("@neutral", "empty sentence")],
)
def test_phrasebank_bad_line(tmp_path, bad, words):
    f = write(tmp_path / "s.txt", f"Fine .@neutral\n\n{bad}\nAlso fine .@positive\n")
    with pytest.raises(DataError) as err:
        read_phrasebank(f)
    assert err.value.line == 3 and words in err.value.message
    assert str(err.value).startswith(f"{f}:3: ")


def test_phrasebank_file(tmp_path):
    folder = tmp_path / "finsent" / "financial_phrasebank"
    folder.mkdir(parents=True)
    write(folder / "Sentences_AllAgree.txt", "a .@neutral\n")
    assert phrasebank_file(tmp_path, "all") == folder / "Sentences_AllAgree.txt"
    assert phrasebank_file(folder, "AllAgree") == folder / "Sentences_AllAgree.txt"
    with pytest.raises(DataError):
        phrasebank_file(tmp_path, "66")
    with pytest.raises(ConfigError):
        phrasebank_file(tmp_path, "90")


# ---------------------------------------------------------------------------------------------- FiQA


def test_fiqa_thresholds_and_ids(tmp_path):
    data = {
        "7": {
            "sentence": "Barclays up, Lloyds down",
            "info": [
                {"target": "Barclays", "sentiment_score": "0.1", "snippets": "[]", "aspects": "[]"},
                {"target": "Lloyds", "sentiment_score": "-0.1"},
            ],
        },
        "9": {
            "sentence": "Tesco slumps",
            "info": [
                {"target": "Tesco", "sentiment_score": "-0.101"},
                {"target": "Tesco", "sentiment_score": "0.1001"},
                {"target": "Tesco", "sentiment_score": "0"},
            ],
        },
    }
    f = write(tmp_path / "task1_headline_ABSA_train.json", json.dumps(data))
    ex = read_fiqa(f)
    assert [(e.id, e.text_pair, e.label) for e in ex] == [
        ("7:0", "Barclays", "neutral"),  # 0.1 is not > 0.1
        ("7:1", "Lloyds", "neutral"),  # -0.1 is not < -0.1
        ("9:0", "Tesco", "negative"),
        ("9:1", "Tesco", "positive"),
        ("9:2", "Tesco", "neutral"),
    ]
    assert ex[0].text == "Barclays up, Lloyds down" and ex[0].line is None
    wide = read_fiqa([f], negative_below=-0.5, positive_above=0.05)
    assert [e.label for e in wide] == ["positive", "neutral", "neutral", "positive", "neutral"]


def test_fiqa_errors(tmp_path):
    bad = write(
        tmp_path / "a.json",
        json.dumps({"1": {"sentence": "x", "info": [{"target": "X", "sentiment_score": "up"}]}}),
    )
    with pytest.raises(DataError, match="sentiment_score"):
        read_fiqa(bad)
    out = write(
        tmp_path / "b.json",
        json.dumps({"1": {"sentence": "x", "info": [{"target": "X", "sentiment_score": "1.5"}]}}),
    )
    with pytest.raises(DataError, match="-1 to 1"):
        read_fiqa(out)
    broken = write(tmp_path / "c.json", '{"1": {"sentence": "x",\n "info": [}\n')
    with pytest.raises(DataError) as err:
        read_fiqa(broken)
    assert err.value.line == 2
    good = write(
        tmp_path / "d.json",
        json.dumps({"1": {"sentence": "x", "info": [{"target": "X", "sentiment_score": "0.5"}]}}),
    )
    with pytest.raises(DataError, match="each file once"):
        read_fiqa([good, good])
    with pytest.raises(ConfigError):
        read_fiqa(good, negative_below=0.2, positive_above=0.1)


# ---------------------------------------------------------------------------------------------- tables


def test_csv_tsv_jsonl_with_text_pair(tmp_path):
    csv_file = write(
        tmp_path / "p.csv", 'premise,hypothesis,label\n"Profit rose, again",Profit fell,contradiction\n'
    )
    tsv_file = write(
        tmp_path / "p.tsv", 'premise\thypothesis\tlabel\n"Profit" rose, again\tProfit fell\tcontradiction\n'
    )
    jsonl_file = write(
        tmp_path / "p.jsonl",
        '{"premise": "Profit rose, again", "hypothesis": "Profit fell", "label": "contradiction"}\n',
    )
    kw = {"text_column": "premise", "text_pair_column": "hypothesis"}
    assert read_table(csv_file, **kw) == [
        Example("Profit rose, again", "contradiction", "Profit fell", "2", 2)
    ]
    # TSV has no quoting: the quotes are part of the text.
    assert read_table(tsv_file, **kw) == [
        Example('"Profit" rose, again', "contradiction", "Profit fell", "2", 2)
    ]
    assert read_table(jsonl_file, **kw) == [
        Example("Profit rose, again", "contradiction", "Profit fell", "1", 1)
    ]
    # format= overrides the extension.
    other = write(tmp_path / "p.txt", "text\tlabel\nhello\tgreet\n")
    assert read_table(other, format="tsv") == [Example("hello", "greet", None, "2", 2)]
    with pytest.raises(DataError, match="extension"):
        read_table(other)
    with pytest.raises(ConfigError):
        read_table(other, format="xlsx")


def test_multi_label_both_forms(tmp_path):
    csv_file = write(tmp_path / "m.csv", "text,labels\ncard lost,card | fraud |card\nhello,\n")
    ex = read_table(csv_file, label_column="labels", multi_label=True)
    assert [e.label for e in ex] == [("card", "fraud"), ()]
    semi = write(tmp_path / "m2.csv", 'text,labels\ncard lost,"card;fraud"\n')
    assert read_table(semi, label_column="labels", multi_label=True, label_delimiter=";")[0].label == (
        "card",
        "fraud",
    )
    jsonl_file = write(
        tmp_path / "m.jsonl",
        '{"text": "card lost", "labels": ["card", " fraud ", ""]}\n\n{"text": "refund", "labels": "refund|card"}\n',
    )
    ex = read_table(jsonl_file, label_column="labels", multi_label=True)
    assert [(e.label, e.id, e.line) for e in ex] == [
        (("card", "fraud"), "1", 1),
        (("refund", "card"), "3", 3),
    ]


def test_json_array_and_unlabelled_and_ids(tmp_path):
    arr = write(
        tmp_path / "a.json", '[{"text": "a", "label": 3, "uid": "x1"}, {"text": "b", "label": "4", "uid": 7}]'
    )
    ex = read_table(arr, id_column="uid")
    assert [(e.text, e.label, e.id, e.line) for e in ex] == [("a", "3", "x1", None), ("b", "4", "7", None)]
    pred = write(tmp_path / "pred.csv", "text\nwhere is my card\n")
    assert read_table(pred, label_column=None) == [Example("where is my card", None, None, "2", 2)]
    dup = write(tmp_path / "d.csv", "id,text,label\nk,a,x\nk,b,y\n")
    with pytest.raises(DataError) as err:
        read_table(dup, id_column="id")
    assert err.value.line == 3 and "duplicate id" in err.value.message


def test_missing_column_names_columns(tmp_path):
    f = write(tmp_path / "b.csv", "text,category\nhi,greet\n")
    with pytest.raises(DataError) as err:
        read_table(f)
    assert err.value.line == 1
    assert "'label'" in err.value.message and "'text', 'category'" in err.value.message
    j = write(tmp_path / "b.jsonl", '{"text": "a", "label": "x"}\n{"sentence": "b", "label": "y"}\n')
    with pytest.raises(DataError) as err:
        read_table(j)
    assert err.value.line == 2 and "'sentence', 'label'" in err.value.message


def test_empty_text_and_missing_label_rows(tmp_path):
    f = write(tmp_path / "e.csv", "text,label\nfine,a\n  ,b\n")
    with pytest.raises(DataError) as err:
        read_table(f)
    assert err.value.line == 3 and "empty text" in err.value.message
    g = write(tmp_path / "g.csv", "text,label\nfine,a\nno label,\n")
    with pytest.raises(DataError) as err:
        read_table(g)
    assert err.value.line == 3 and "empty label" in err.value.message
    h = write(tmp_path / "h.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n')
    with pytest.raises(DataError) as err:
        read_table(h)
    assert err.value.line == 2 and "missing label" in err.value.message


def test_quoted_multiline_field_row_numbering(tmp_path):
    content = (
        "text,label,response\r\n"
        'first,a,"one line"\r\n'
        'second,b,"line one\r\nline two\r\nline three"\r\n'
        "third,c,plain\r\n"
        "\r\n"
        ",d,x\r\n"
    )
    f = write(tmp_path / "q.csv", content)
    with pytest.raises(DataError) as err:
        read_table(f)
    # Rows: header 1, first 2, second 3 (lines 3-5), third 4 (line 6), blank 5 (line 7), bad 6 (line 8).
    assert err.value.line == 6 and "starts on line 8" in err.value.message
    ok = write(tmp_path / "ok.csv", content.rsplit("\r\n\r\n", 1)[0] + "\r\n")
    ex = read_table(ok)
    assert [(e.text, e.label, e.id, e.line) for e in ex] == [
        ("first", "a", "2", 2),
        ("second", "b", "3", 3),
        ("third", "c", "4", 4),
    ]


def test_csv_quoting_and_field_count_errors(tmp_path):
    bad_quote = write(tmp_path / "q.csv", 'text,label\nok,a\n"broken" text,b\n')
    with pytest.raises(DataError) as err:
        read_table(bad_quote)
    assert err.value.line == 3 and "quoting" in err.value.message
    unclosed = write(tmp_path / "u.csv", 'text,label\nok,a\n"never closed,b\nmore\n')
    with pytest.raises(DataError) as err:
        read_table(unclosed)
    assert err.value.line == 3
    extra = write(tmp_path / "x.csv", "text,label\nrates rose, sharply,a\n")
    with pytest.raises(DataError) as err:
        read_table(extra)
    assert err.value.line == 2 and "expected 2" in err.value.message
    with pytest.raises(DataError, match="header"):
        read_table(write(tmp_path / "empty.csv", ""))


def test_bad_json_line(tmp_path):
    f = write(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": }\n')
    with pytest.raises(DataError) as err:
        read_table(f)
    assert err.value.line == 2 and "invalid JSON" in err.value.message
    g = write(tmp_path / "list.jsonl", '["a", "x"]\n')
    with pytest.raises(DataError, match="JSON object"):
        read_table(g)


def test_banking77_and_bitext_shapes(tmp_path):
    b = write(tmp_path / "train.csv", "text,category\r\nI am still waiting on my card?,card_arrival\r\n")
    assert read_banking77(b) == [Example("I am still waiting on my card?", "card_arrival", None, "2", 2)]
    header = "context,role,instruction,intent,entity_type,entity_value,start_offset,end_offset,category,tags,response"
    rows = [
        'cs,va,cancel order 12?,cancel_order,order_id,12,13,15,ORDER,BIL,"Sure.\n\n1. Log in.\n2. Cancel."',
        "cs,va,where is my refund,track_refund,,,,,REFUND,B,Soon.",
    ]
    bt = write(tmp_path / "bitext.csv", "\n".join([header, *rows]) + "\n")
    assert [(e.text, e.label, e.line) for e in read_bitext(bt)] == [
        ("cancel order 12?", "cancel_order", 2),
        ("where is my refund", "track_refund", 3),
    ]
    assert [e.label for e in read_bitext(bt, label="category")] == ["ORDER", "REFUND"]
    with pytest.raises(ConfigError):
        read_bitext(bt, label="tags")


# -------------------------------------------------------------------------------------------- CLINC150


def _tiny_clinc(tmp_path: Path) -> Path:
    data = {
        "train": [
            ["book a flight", "book_flight"],
            ["what's my balance", "balance"],
            ["fly me to rome", "book_flight"],
        ],
        "val": [["flight to oslo", "book_flight"], ["balance please", "balance"]],
        "test": [["my balance", "balance"]],
        "oos_train": [["sing a song", "oos"]],
        "oos_val": [["tell a joke", "oos"], ["paint my house", "oos"]],
        "oos_test": [["fix my car", "oos"], ["what is love", "oos"], ["who won", "oos"]],
    }
    return write(tmp_path / "data_full.json", json.dumps(data))


@pytest.mark.parametrize(
    ("mode", "sizes", "oos_counts"),
    [
        ("class", {"train": 4, "validation": 4, "test": 4}, {"train": 1, "validation": 2, "test": 3}),
        ("threshold", {"train": 3, "validation": 4, "test": 4}, {"train": 0, "validation": 2, "test": 3}),
        ("exclude", {"train": 3, "validation": 2, "test": 1}, {"train": 0, "validation": 0, "test": 0}),
    ],
)
def test_clinc_modes(tmp_path, mode, sizes, oos_counts):
    splits = read_clinc150(_tiny_clinc(tmp_path), oos=mode)
    assert {k: len(v) for k, v in splits.items()} == sizes
    assert {k: sum(e.label == "oos" for e in v) for k, v in splits.items()} == oos_counts
    ids = [e.id for v in splits.values() for e in v]
    assert len(set(ids)) == len(ids)
    assert splits["train"][0] == Example("book a flight", "book_flight", None, "train:0", None)


def test_clinc_errors(tmp_path):
    with pytest.raises(ConfigError):
        read_clinc150(_tiny_clinc(tmp_path), oos="reject")
    f = write(tmp_path / "x.json", json.dumps({"train": [], "val": []}))
    with pytest.raises(DataError) as err:
        read_clinc150(f)
    assert "test" in err.value.message and "'train', 'val'" in err.value.message
    g = write(
        tmp_path / "y.json",
        json.dumps(
            {k: [] for k in ("val", "test", "oos_train", "oos_val", "oos_test")} | {"train": [["only text"]]}
        ),
    )
    with pytest.raises(DataError, match=r"item 0"):
        read_clinc150(g)


# ------------------------------------------------------------------------------------------- splitting


def _check_partition(parts, n):
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n))  # disjoint and complete
    assert all(p == sorted(p) for p in parts)


def test_split_small_case_by_hand():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"]
    parts = stratified_split(labels, (0.8, 0.1, 0.1), seed=7)
    _check_partition(parts, 10)
    per = [Counter(labels[i] for i in p) for p in parts]
    # a: 4.8/.6/.6 -> 4,0,0 + 2 left (to .8 then .6 tie -> validation) = 5,1,0 -> test takes 1 from train: 4,1,1.
    # b: 2.4/.3/.3 -> 2,0,0 + 1 left -> 3,0,0 -> validation and test each take 1 from train: 1,1,1.
    # c: 1 example: .8 remainder wins -> 1,0,0 (fewer than 3 examples: no minimum).
    assert per == [Counter(a=4, b=1, c=1), Counter(a=1, b=1), Counter(a=1, b=1)]
    # The membership follows the documented definition: RandomState([seed, sha256(label)[:4] LE]).
    expected: list[list[int]] = [[], [], []]
    for label, counts in (("a", (4, 1, 1)), ("b", (1, 1, 1)), ("c", (1, 0, 0))):
        idx = np.array([i for i, lab in enumerate(labels) if lab == label])
        h = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "little")
        shuffled = idx[np.random.RandomState([7, h]).permutation(len(idx))]
        cuts = np.cumsum((0, *counts))
        for s in range(3):
            expected[s].extend(int(i) for i in shuffled[cuts[s] : cuts[s + 1]])
    assert parts == tuple(sorted(e) for e in expected)


def test_split_ties_go_to_split_behind():
    labels = ["a"] * 3 + ["b"] * 3
    parts = stratified_split(labels, (0.5, 0.5), seed=1)
    _check_partition(parts, 6)
    # a: 1.5/1.5 -> tie, both 1.5 behind -> first split: 2,1. b: tie, split 1 now further behind -> 1,2.
    assert [len(p) for p in parts] == [3, 3]
    assert Counter(labels[i] for i in parts[0]) == Counter(a=2, b=1)


def test_split_deterministic_stratified_exact():
    rng = np.random.RandomState(0)
    labels = [f"c{k}" for k in rng.randint(0, 6, size=600)] + ["rare"] * 3 + ["single"]
    parts = stratified_split(labels, seed=123)
    assert parts == stratified_split(list(labels), seed=123)
    assert parts != stratified_split(labels, seed=124)
    _check_partition(parts, len(labels))
    totals = Counter(labels)
    for label, n in totals.items():
        counts = [sum(labels[i] == label for i in p) for p in parts]
        assert sum(counts) == n
        if n >= 10:  # no minimum adjustment: each count is floor or ceil of its quota
            for c, f in zip(counts, (0.8, 0.1, 0.1), strict=True):
                assert int(n * f) <= c <= int(n * f) + 1
        elif n >= 3:
            assert all(c >= 1 for c in counts)
    assert [sum(labels[i] == "rare" for i in p) for p in parts] == [1, 1, 1]
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 604 and all(
        abs(s - 604 * f) <= 3 for s, f in zip(sizes, (0.8, 0.1, 0.1), strict=True)
    )
    # Two fractions; integers as labels.
    two = stratified_split([k % 4 for k in range(40)], (0.75, 0.25))
    # Each class of 10: 7.5/2.5 -> 7,2 + a tie; it goes to the split behind: 8,2 / 7,3 / 8,2 / 7,3.
    assert [len(p) for p in two] == [30, 10]
    assert [sum(labels_i == 1 for labels_i in (i % 4 for i in two[1]))] == [3]
    _check_partition(two, 40)


def test_split_fraction_validation():
    for bad in [(0.8, 0.1), (1.0,), (0.9, 0.2, -0.1), (0.5, float("nan"))]:
        with pytest.raises(ValueError):
            stratified_split(["a", "b"], bad)
    with pytest.raises(ValueError):
        stratified_split(["a"], seed=-1)
    assert stratified_split([], (0.5, 0.5)) == ([], [])


def test_write_split_ids(tmp_path):
    out = tmp_path / "sub" / "splits.json"
    write_split_ids(out, {"train": ["1", "2"], "validation": ["3"], "test": []})
    assert json.loads(out.read_text(encoding="utf-8")) == {
        "train": ["1", "2"],
        "validation": ["3"],
        "test": [],
    }
    write_split_ids(out, {"train": ["9"]})
    assert json.loads(out.read_text(encoding="utf-8")) == {"train": ["9"]}
    assert sorted(os.listdir(out.parent)) == ["splits.json"]  # no temporary file left
    with pytest.raises(ValueError):
        write_split_ids(out, {"train": ["1"], "test": ["1"]})
    assert json.loads(out.read_text(encoding="utf-8")) == {"train": ["9"]}


# ---------------------------------------------------------------------------------- real-data smoke


def _data_dir() -> Path:
    env = os.environ.get("EXPERIMENTS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.smoke
def test_real_files():
    data = _data_dir()
    if not data.is_dir():
        pytest.skip(f"no real data at {data}")

    def counts(examples):
        c = Counter(e.label for e in examples)
        return len(examples), (c["negative"], c["neutral"], c["positive"])

    pb50 = read_phrasebank(phrasebank_file(data, "50"))
    pball = read_phrasebank(phrasebank_file(data, "all"))
    assert counts(pb50) == (4846, (604, 2879, 1363))
    assert counts(pball) == (2264, (303, 1391, 570))
    # The Latin-1 and UTF-8 files decode to the same sentences: every AllAgree one is in 50Agree.
    assert {e.text for e in pball} <= {e.text for e in pb50}

    b77_train = read_banking77(data / "intent" / "banking77" / "train.csv")
    assert len(b77_train) == 10003 and len({e.label for e in b77_train}) == 77
    assert len(read_banking77(data / "intent" / "banking77" / "test.csv")) == 3080

    clinc = read_clinc150(data / "intent" / "clinc150" / "data_full.json", oos="class")
    assert {k: (len(v), sum(e.label == "oos" for e in v)) for k, v in clinc.items()} == {
        "train": (15100, 100),
        "validation": (3100, 100),
        "test": (5500, 1000),
    }
    assert len({e.label for e in clinc["train"]}) == 151

    bitext = read_bitext(
        data / "intent" / "bitext_customer_support" / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
    )
    assert len(bitext) == 4514 and len({e.label for e in bitext}) == 27

    fiqa = read_fiqa(data / "finsent" / "fiqa_task1" / "task1_headline_ABSA_train.json")
    assert len(fiqa) == 379 and len({e.text for e in fiqa}) <= 336
