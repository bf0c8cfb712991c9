"""Property-based tests of the readers (hypothesis).

1. Whatever bytes or text a file holds, every reader either returns its records or raises our
   ``DataError``: never ``KeyError``, ``UnicodeDecodeError``, ``csv.Error``, ``json.JSONDecodeError``,
   ``RecursionError``... Besides raw text and bytes, inputs are built from fragments of each format
   (tags, separators, quotes, brackets, BOMs, NULs, CRs) so that they get past the first checks.
2. Round trips are stable: ``write_conll`` then ``read_conll`` gives back valid IOB2 sentences unchanged,
   and so does a CSV (or JSON Lines) table written with the standard library and read by ``read_table``.
"""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.errors import DataError
from experiments.tasks.classification.readers import (
    read_banking77,
    read_bitext,
    read_clinc150,
    read_fiqa,
    read_phrasebank,
    read_table,
)
from experiments.tasks.ner.conll import Sentence, check_labels, read_conll, write_conll
from experiments.tasks.ner.datamodule import looks_like_conll, read_plain_text

try:  # the recommendation task (MIND format) is newer than the rest
    from experiments.tasks.recommendation.mind import read_behaviors, read_news
except ImportError:  # pragma: no cover
    read_behaviors = read_news = None

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------- input strategies


def _joined(fragments: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(fragments), st.text(max_size=4)), max_size=40).map("".join)


CONLL_FRAGMENTS = [
    "john", "paris", "科0", "01", "O", "B-PER", "I-PER", "E-LOC", "S-ORG", "M-X", "L-X", "U-X", "X-PER",
    "B-", "-X", "-DOCSTART-", " ", "\t", "  ", "\n", "\n\n", "\r\n", "\r", "\ufeff", "\x00", "\u00a0",
    "\u2028",
]
PHRASEBANK_FRAGMENTS = [
    "Sales rose", "@", "@positive", "@negative", "@neutral", "@mixed", " ", "\n", "\r\n", "\r", "\ufeff",
    "\x00", "\u0085", "\xe4",
]
CSV_FRAGMENTS = [
    "text", "label", "category", "instruction", "intent", "id", ",", '"', '""', "\t", "\n", "\r\n", "\r",
    " ", "a", "1", "\ufeff", "\x00", "text,label\n", "text\tlabel\n", "text,category\n",
    "instruction,category,intent\n",
]
JSON_FRAGMENTS = [
    "{", "}", "[", "]", ",", ":", '"', '"text"', '"label"', '"sentence"', '"info"', '"target"',
    '"sentiment_score"', '"train"', '"val"', '"oos_test"', "1", "-0.5", "1e999", "NaN", "null", "true",
    "\n", " ", '"\\ud800"', "\x00",
]

MIND_FRAGMENTS = [
    "N1", "N2", "U1", "\t", " ", "-1", "-0", "-2", "-", "N1-1", "N2-0", "11/15/2019 8:55:22 AM", "news",
    "\n", "\r\n", "\r", "\ufeff", "\x00", "1\tU1\tt\tN1 N2\tN1-1 N2-0\n", "N1\tnews\tus\ttitle\n",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
score = st.one_of(
    st.floats(), st.integers(), st.text(max_size=6), st.sampled_from(["0.5", "-0.2", "1.7", "nan", "1e400"]),
    st.just(10**400), json_values,
)
fiqa_info = st.one_of(
    st.fixed_dictionaries(
        {"target": st.one_of(st.text(min_size=1, max_size=6), json_values), "sentiment_score": score}
    ),
    st.fixed_dictionaries({}, optional={"target": st.text(max_size=6), "sentiment_score": score}),
    json_values,
)
fiqa_record = st.one_of(
    st.fixed_dictionaries(
        {"sentence": st.text(min_size=1, max_size=10), "info": st.lists(fiqa_info, max_size=3)}
    ),
    st.fixed_dictionaries(
        {}, optional={"sentence": json_values, "info": st.one_of(json_values, st.lists(fiqa_info))}
    ),
    json_values,
)
fiqa_docs = st.dictionaries(st.text(max_size=4), fiqa_record, max_size=4).map(json.dumps)
clinc_docs = st.dictionaries(
    st.sampled_from(["train", "val", "test", "oos_train", "oos_val", "oos_test", "other"]),
    st.one_of(json_values, st.lists(st.one_of(json_values, st.lists(st.one_of(
        st.text(max_size=8), st.just("oos"), json_values), max_size=3)), max_size=3)),
).map(json.dumps)
table_rows = st.lists(
    st.one_of(json_values, st.dictionaries(
        st.sampled_from(["text", "label", "id", "category", "instruction", "intent"]),
        st.one_of(json_values, st.text(max_size=8), st.lists(st.text(max_size=4), max_size=2)),
    )),
    max_size=5,
)
jsonl_docs = table_rows.map(lambda rows: "\n".join(json.dumps(r) for r in rows))
json_array_docs = table_rows.map(json.dumps)


def content(*structured: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Raw bytes, any text (UTF-8), or structured near-valid text, as the bytes of a file."""
    texts = st.one_of(st.text(), *structured)
    return st.one_of(st.binary(), texts.map(lambda t: t.encode("utf-8", "surrogatepass")))


# ------------------------------------------------------------------------------- readers under test

TRAIN_LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


def _conll_checked(path: Path) -> Any:
    return check_labels(read_conll(path), TRAIN_LABELS, path)


CONLL = content(_joined(CONLL_FRAGMENTS))
CSV = content(_joined(CSV_FRAGMENTS))
JSON_TEXT = _joined(JSON_FRAGMENTS)

# name -> (file name, reader call, input strategy)
READERS: dict[str, tuple[str, Callable[[Path], Any], st.SearchStrategy[bytes]]] = {
    "read_conll": ("f.conll", read_conll, CONLL),
    "read_conll_tab": ("f.conll", functools.partial(read_conll, separator="\t", tag_column=1), CONLL),
    "read_conll_weibo": ("f.conll", functools.partial(read_conll, char_digit_tokens=True), CONLL),
    "read_conll_bmes": ("f.conll", functools.partial(read_conll, scheme="bmes"), CONLL),
    "read_conll_iob1": ("f.conll", functools.partial(read_conll, scheme="iob1"), CONLL),
    "check_labels": ("f.conll", _conll_checked, CONLL),
    "read_plain_text": ("f.txt", read_plain_text, CONLL),
    "read_phrasebank": ("f.txt", read_phrasebank, content(_joined(PHRASEBANK_FRAGMENTS))),
    "read_fiqa": ("f.json", read_fiqa, content(fiqa_docs, JSON_TEXT)),
    "read_clinc150": ("f.json", read_clinc150, content(clinc_docs, JSON_TEXT)),
    "read_table_csv": ("f.csv", read_table, CSV),
    "read_table_tsv": ("f.tsv", read_table, CSV),
    "read_table_csv_ids": ("f.csv", functools.partial(read_table, id_column="id", multi_label=True), CSV),
    "read_table_jsonl": ("f.jsonl", read_table, content(jsonl_docs, JSON_TEXT)),
    "read_table_json": (
        "f.json", functools.partial(read_table, id_column="id"), content(json_array_docs, JSON_TEXT)
    ),
    "read_table_jsonl_multi": (
        "f.jsonl", functools.partial(read_table, multi_label=True, label_delimiter=","), content(jsonl_docs)
    ),
    "read_banking77": ("f.csv", read_banking77, CSV),
    "read_bitext": ("f.csv", functools.partial(read_bitext, label="category"), CSV),
}
if read_news is not None:
    MIND = content(_joined(MIND_FRAGMENTS))
    READERS["read_news"] = ("news.tsv", read_news, MIND)
    READERS["read_behaviors"] = ("behaviors.tsv", read_behaviors, MIND)
    READERS["read_behaviors_checked"] = (
        "behaviors.tsv", functools.partial(read_behaviors, news=dict.fromkeys(["N1", "N2"])), MIND
    )


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _parses_or_data_error(call: Callable[[Path], Any], path: Path) -> None:
    try:
        call(path)
    except DataError as err:
        assert err.path == str(path) or err.path.startswith(str(path.parent)), err.path
        assert str(err).startswith(err.path)
    # Anything else propagates and fails the test, with hypothesis' minimal example.


@pytest.mark.parametrize("reader", sorted(READERS))
def test_any_file_parses_or_raises_data_error(reader, scratch):
    name, call, strategy = READERS[reader]
    path = scratch / reader / name
    path.parent.mkdir(exist_ok=True)

    @SETTINGS
    @given(data=strategy)
    def check(data: bytes) -> None:
        path.write_bytes(data)
        _parses_or_data_error(call, path)

    check()


@SETTINGS
@given(data=CONLL)
def test_looks_like_conll_always_answers_a_bool(data, scratch):
    path = scratch / "sniff.txt"
    path.write_bytes(data)
    assert isinstance(looks_like_conll(path), bool)


# Well-formed files with any JSON value in one field: reach the field checks far more often than above.
any_value = st.one_of(json_values, score, st.integers(min_value=10**300, max_value=10**500))


@SETTINGS
@given(value=any_value, where=st.sampled_from(["sentence", "target", "sentiment_score", "info", "record"]))
def test_fiqa_any_value_in_any_field(value, where, scratch):
    info = {"target": "Acme", "sentiment_score": "0.3"}
    record: Any = {"sentence": "Shares rose", "info": [info]}
    if where == "record":
        record = value
    elif where == "info":
        record["info"] = value
    elif where == "sentence":
        record["sentence"] = value
    else:
        info[where] = value
    path = scratch / "fiqa_value.json"
    path.write_text(json.dumps({"1": record}))
    _parses_or_data_error(read_fiqa, path)


@SETTINGS
@given(value=any_value, where=st.sampled_from(["text", "label", "id", "row"]), multi=st.booleans())
def test_jsonl_any_value_in_any_field(value, where, multi, scratch):
    row: Any = {"text": "where is my card", "label": "card", "id": "a"}
    if where == "row":
        row = value
    else:
        row[where] = value
    path = scratch / "value.jsonl"
    path.write_text(json.dumps({"text": "hi", "label": "greet", "id": "b"}) + "\n" + json.dumps(row) + "\n")
    _parses_or_data_error(functools.partial(read_table, id_column="id", multi_label=multi), path)


@SETTINGS
@given(value=any_value, split=st.sampled_from(["train", "val", "test", "oos_train", "oos_val", "oos_test"]),
       whole=st.booleans())
def test_clinc150_any_value_in_any_split(value, split, whole, scratch):
    data: dict[str, Any] = {k: [["book a flight", "book_flight"]] for k in ("train", "val", "test")}
    data.update({k: [["tell me a joke", "oos"]] for k in ("oos_train", "oos_val", "oos_test")})
    data[split] = value if whole else [value]
    path = scratch / "clinc_value.json"
    path.write_text(json.dumps(data))
    for oos in ("class", "threshold", "exclude"):
        _parses_or_data_error(functools.partial(read_clinc150, oos=oos), path)


# ------------------------------------------------------------------------------------ round trips

# A word: no whitespace (of any kind), no control or surrogate characters, no BOM, not -DOCSTART-.
word = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="\ufeff"
    ),
    min_size=1,
    max_size=8,
).filter(lambda w: not any(c.isspace() for c in w) and not w.startswith("-DOCSTART-"))
entity_type = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_",
                      min_size=1, max_size=6)


@st.composite
def iob2_tags(draw) -> list[str]:
    """A valid IOB2 tag sequence: O's and entities B-X I-X* (adjacent entities allowed)."""
    tags: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            tags += ["O"] * draw(st.integers(1, 3))
        else:
            typ = draw(entity_type)
            tags += [f"B-{typ}"] + [f"I-{typ}"] * draw(st.integers(0, 3))
    return tags


@st.composite
def sentences(draw) -> list[Sentence]:
    out = []
    for _ in range(draw(st.integers(1, 5))):
        tags = draw(iob2_tags())
        words = draw(st.lists(word, min_size=len(tags), max_size=len(tags)))
        out.append(Sentence(words, tags, line=0))
    return out


@SETTINGS
@given(sents=sentences(), separator=st.sampled_from([None, "\t"]))
def test_conll_write_read_round_trip_is_stable(sents, separator, scratch):
    first, second = scratch / "rt1.conll", scratch / "rt2.conll"
    write_conll(sents, first)
    read1 = read_conll(first, separator=separator)
    assert [(s.words, s.tags) for s in read1] == [(s.words, s.tags) for s in sents]
    write_conll(read1, second)
    assert second.read_bytes() == first.read_bytes()
    assert read_conll(second, separator=separator) == read1


# A table cell as read_table returns it: no NUL or surrogate, no surrounding whitespace, not empty.
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
               max_size=20).filter(lambda t: t.strip() == t and t != "")


@SETTINGS
@given(rows=st.lists(st.tuples(cell, cell), max_size=8))
def test_csv_table_round_trip_is_stable(rows, scratch):
    first, second = scratch / "rt1.csv", scratch / "rt2.csv"

    def write(path: Path, data: list[tuple[str, str]]) -> None:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(data)

    write(first, rows)
    examples = read_table(first)
    assert [(e.text, e.label) for e in examples] == rows
    assert [e.id for e in examples] == [str(i) for i in range(2, len(rows) + 2)]  # header = row 1
    write(second, [(e.text, e.label) for e in examples])
    assert second.read_bytes() == first.read_bytes()
    assert read_table(second) == examples


@SETTINGS
@given(rows=st.lists(st.tuples(cell, cell), max_size=8))
def test_jsonl_table_round_trip_is_stable(rows, scratch):
    path = scratch / "rt.jsonl"
    lines = (json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    path.write_text("".join(lines), encoding="utf-8")
    examples = read_table(path)
    assert [(e.text, e.label) for e in examples] == rows
    assert [e.line for e in examples] == list(range(1, len(rows) + 1))
