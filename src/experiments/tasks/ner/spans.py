"""NER from character-offset span annotations (doccano, Label Studio, CSV), turned into word-level IOB2.

Why: annotation tools export entities as character spans over raw text, not as CoNLL columns, and a
support assistant needs the entities back as character spans to fill its answer templates. So a text is
split into words with BERT's own pre-tokenizer (``tokenizers.pre_tokenizers.BertPreTokenizer``: split on
whitespace, and every punctuation character is a word of its own), spans become IOB2 tags of those words,
and the word offsets travel with the sentence so that predicted entities map back to character offsets.

Span errors name the file and row: a span that cuts a word, spans that share a word, offsets past the end
of the text, an empty or reversed span. With ``snap=True`` a span that cuts a word is widened to the words
it touches and a span running past the end is cut at the end; both are counted and logged (overlaps stay
errors: no rule recovers the annotator's intent).

Record forms read (JSON Lines, a JSON array, or CSV/TSV; the spans key is found automatically):

* doccano sequence labelling: ``{"text": ..., "label": [[start, end, "TYPE"], ...]}``, and doccano's
  relation export ``{"text": ..., "entities": [{"start_offset", "end_offset", "label"}, ...]}``;
* Label Studio: a task ``{"data": {"text": ...}, "annotations": [{"result": [{"value": {"start", "end",
  "labels": ["TYPE"]}}]}]}`` (the first annotation not marked ``was_cancelled``), or JSON-MIN
  ``{"text": ..., "label": [{"start", "end", "labels": ["TYPE"]}]}``;
* ours: ``{"text": ..., "spans": [{"start", "end", "label"}]}``;
* CSV with one span per row in three columns (Bitext's ``entity_type, start_offset, end_offset``; empty
  cells = no entity), or with a column holding one of the JSON lists above.

Offsets are Python string indices (Unicode code points), end exclusive, as doccano and Label Studio write them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, DataError
from experiments.tasks.ner.conll import Sentence
from experiments.tasks.tables import TableRecord, show, table_format, table_records

log = logging.getLogger(__name__)

__all__ = ["Span", "SpanError", "SpanOptions", "split_words", "spans_to_iob2", "read_span_file", "SPAN_KEYS"]

#: Keys searched, in this order, for a record's list of spans when ``spans_column`` is not given.
SPAN_KEYS = ("spans", "entities", "label", "labels")
_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".tab")


def is_span_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path``'s extension is one of the table formats (``.jsonl``, ``.json``, ``.csv``...)."""
    return Path(path).suffix.lower() in _EXTENSIONS


@dataclass(frozen=True)
class Span:
    """One annotated entity: characters ``start`` (inclusive) to ``end`` (exclusive) of the text, of type ``label``."""

    start: int
    end: int
    label: str


class SpanError(ValueError):
    """A span that cannot be turned into word tags; the reader adds file and row."""


@dataclass(frozen=True)
class SpanOptions:
    """How to read a span file.

    Attributes:
        text_column: the text's key (inside ``data`` for Label Studio tasks).
        spans_column: the key of the spans list; ``None`` = the first of :data:`SPAN_KEYS` present (or
            Label Studio's ``annotations``).
        label_column, start_column, end_column: CSV with one span per row (all three, or none).
        id_column: key of a unique example id; ``None`` = the row or line number.
        stratify_column: key whose value groups examples when splits are carved (e.g. Bitext's ``intent``);
            ``None`` = the sorted set of entity types of the example.
        snap: widen spans that cut words, cut spans that run past the end (counted), instead of failing.
    """

    text_column: str = "text"
    spans_column: str | None = None
    label_column: str | None = None
    start_column: str | None = None
    end_column: str | None = None
    id_column: str | None = None
    stratify_column: str | None = None
    snap: bool = False

    def __post_init__(self) -> None:
        given = [c is not None for c in (self.label_column, self.start_column, self.end_column)]
        if any(given) and not all(given):
            raise ConfigError("data.span_label_column, span_start_column and span_end_column go together: "
                              "set all three (one span per CSV row) or none")
        if all(given) and self.spans_column is not None:
            raise ConfigError("set data.spans_column or the three span_*_column keys, not both")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` for the words of ``text``, as BERT's pre-tokenizer splits them.

    Whitespace separates words and each punctuation character (Unicode class P, and ASCII symbols such as
    ``$`` or ``{``) is a word of its own; offsets are string indices, end exclusive.
    """
    from tokenizers.pre_tokenizers import BertPreTokenizer

    return [(w, a, b) for w, (a, b) in BertPreTokenizer().pre_tokenize_str(text)]


def spans_to_iob2(text: str, spans: Sequence[Span], *, snap: bool = False
                  ) -> tuple[list[str], list[tuple[int, int]], list[str], int]:
    """Word-level IOB2 tags of ``text`` from character spans.

    Args:
        text: the raw text.
        spans: the entities, any order.
        snap: widen a span that cuts a word to the words it touches, and cut a span that ends past the text
            at its end, instead of raising.

    Returns:
        ``(words, offsets, tags, snapped)``: the words (:func:`split_words`), each word's ``(start, end)``,
        one IOB2 tag per word, and the number of spans that were snapped.

    Raises:
        SpanError: an empty label, a reversed or empty span, a negative offset, an offset past the end (unless
            ``snap``), a span that covers no word, a span that cuts a word (unless ``snap``), or two spans that
            share a word.
    """
    words = split_words(text)
    tags = ["O"] * len(words)
    owner: list[Span | None] = [None] * len(words)
    snapped = 0
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        shown = f"span [{span.start}, {span.end}) {span.label!r}"
        if not span.label.strip():
            raise SpanError(f"{shown}: empty label; expected an entity type")
        if span.start < 0 or span.end <= span.start:
            raise SpanError(f"{shown}: start must be >= 0 and end > start")
        end = span.end
        if end > len(text):
            if not snap or span.start >= len(text):
                raise SpanError(f"{shown}: ends past the end of the text ({len(text)} characters); "
                                "expected offsets within the text (data.snap_spans=true cuts it at the end)")
            end = len(text)
        covered = [i for i, (_, a, b) in enumerate(words) if a < end and b > span.start]
        if not covered:
            raise SpanError(f"{shown}: covers no word (only whitespace); expected a span over words")
        first, last = covered[0], covered[-1]
        cut = words[first][1] != span.start or words[last][2] != end
        if cut and not snap:
            raise SpanError(f"{shown} = {show(text[span.start:end])} does not fall on word boundaries (the words "
                            f"are {show(' '.join(w for w, _, _ in words[first:last + 1]))}); expected whole "
                            "words (data.snap_spans=true widens it to them)")
        snapped += cut or end != span.end
        for i in covered:
            if owner[i] is not None:
                o = owner[i]
                raise SpanError(f"{shown} overlaps span [{o.start}, {o.end}) {o.label!r} on the word "
                                f"{show(words[i][0])}; expected spans that share no word")
            owner[i] = span
            tags[i] = ("B-" if i == first else "I-") + span.label.strip()
    return [w for w, _, _ in words], [(a, b) for _, a, b in words], tags, snapped


# ------------------------------------------------------------------------------------------- reading


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise SpanError(f"{what} is {value!r}; expected an integer offset")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise SpanError(f"{what} is {show(value)}; expected an integer offset")


def _label(value: Any) -> str:
    if isinstance(value, list):  # Label Studio: "labels": ["TYPE"]
        if len(value) != 1:
            raise SpanError(f"labels {show(value)}; expected exactly one label per span")
        value = value[0]
    if not isinstance(value, str):
        raise SpanError(f"label {show(value)}; expected a string")
    return value


def _span(item: Any) -> Span:
    """One span from ``[start, end, label]`` or a dict with start/start_offset, end/end_offset, label/labels."""
    if isinstance(item, list | tuple):
        if len(item) != 3:
            raise SpanError(f"span {show(item)}; expected [start, end, label]")
        return Span(_int(item[0], "start"), _int(item[1], "end"), _label(item[2]))
    if isinstance(item, Mapping):
        value = item.get("value", item)  # Label Studio result items hold the span in "value"
        start = value.get("start", value.get("start_offset"))
        end = value.get("end", value.get("end_offset"))
        label = value.get("label", value.get("labels"))
        if start is None or end is None or label is None:
            raise SpanError(f"span {show(dict(value))}; expected keys start, end and label (or start_offset, "
                            "end_offset, labels)")
        return Span(_int(start, "start"), _int(end, "end"), _label(label))
    raise SpanError(f"span {show(item)}; expected [start, end, label] or an object with start, end, label")


def _spans_value(values: Mapping[str, Any], opts: SpanOptions, csv_like: bool) -> tuple[list[Any] | None, str]:
    """The raw list of spans of one record and the key it came from (``None``: the record has none)."""
    if opts.spans_column is not None:
        if opts.spans_column not in values:
            raise SpanError(f"no key {opts.spans_column!r}; keys found: {', '.join(map(repr, values))}")
        keys = [opts.spans_column]
    elif "annotations" in values and isinstance(values["annotations"], list):  # Label Studio task
        done = [a for a in values["annotations"] if isinstance(a, Mapping) and not a.get("was_cancelled")]
        if not done:
            return None, "annotations"
        result = done[0].get("result", [])
        return [r for r in result if not isinstance(r, Mapping) or r.get("type", "labels") == "labels"], "annotations"
    else:
        keys = [k for k in SPAN_KEYS if k in values]
        if not keys:
            return None, ""
    raw = values[keys[0]]
    if csv_like and isinstance(raw, str):
        if not raw.strip():
            return [], keys[0]
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SpanError(f"{keys[0]!r} is not a JSON list of spans ({exc.msg})") from None
    if not isinstance(raw, list):
        raise SpanError(f"{keys[0]!r} is {show(raw)}; expected a list of spans")
    return raw, keys[0]


def _record_spans(values: Mapping[str, Any], opts: SpanOptions, csv_like: bool) -> list[Span] | None:
    if opts.label_column is not None:
        cells = [values.get(c) for c in (opts.label_column, opts.start_column, opts.end_column)]
        cells = [c.strip() if isinstance(c, str) else c for c in cells]
        if all(c in (None, "") for c in cells):
            return []
        if any(c in (None, "") for c in cells):
            raise SpanError(f"{opts.label_column!r}, {opts.start_column!r}, {opts.end_column!r} are "
                            f"{show(cells)}; expected all three filled or all three empty")
        return [Span(_int(cells[1], opts.start_column), _int(cells[2], opts.end_column), _label(cells[0]))]
    raw, _ = _spans_value(values, opts, csv_like)
    return None if raw is None else [_span(item) for item in raw]


def _text(values: Mapping[str, Any], opts: SpanOptions) -> Any:
    if opts.text_column in values:
        return values[opts.text_column]
    data = values.get("data")
    if isinstance(data, Mapping) and opts.text_column in data:  # Label Studio task
        return data[opts.text_column]
    raise SpanError(f"no key {opts.text_column!r}; keys found: {', '.join(map(repr, values))}; expected the "
                    "text (data.text_column)")


def read_span_file(path: str | os.PathLike[str], options: SpanOptions | None = None, *,
                   format: str | None = None, labelled: bool = True) -> tuple[list[Sentence], list[str]]:
    """Read a span-annotated file into sentences with IOB2 tags, offsets and ids.

    Args:
        path: ``.jsonl``/``.json``/``.csv``/``.tsv`` file (or ``format``).
        options: keys and policies (:class:`SpanOptions`).
        format: ``csv``, ``tsv``, ``jsonl`` or ``json``; ``None`` decides by the extension.
        labelled: spans are required (training and test files); ``False`` (predict) ignores them.

    Returns:
        ``(sentences, strata)``: one :class:`~experiments.tasks.ner.conll.Sentence` per record, with
        ``text``, ``offsets`` and ``id`` set and ``line`` the row (CSV, header = row 1) or line (JSON Lines);
        and one stratum per sentence for carved splits (``stratify_column``'s value, else the sorted
        entity types joined by ``|``, ``O`` when none).

    Raises:
        ConfigError: inconsistent options or an unknown ``format``.
        DataError: a record without text or (when ``labelled``) without spans, a malformed span (see
            :func:`spans_to_iob2`), a duplicate id, no records; and every table error of
            :mod:`experiments.tasks.tables`. The message names the file and row.
    """
    opts = options or SpanOptions()
    p = Path(path)
    fmt = table_format(p, format)
    csv_like = fmt in ("csv", "tsv")
    needed = [opts.text_column] if csv_like else []
    if csv_like:
        needed += [c for c in (opts.spans_column, opts.label_column, opts.start_column, opts.end_column,
                               opts.id_column, opts.stratify_column) if c is not None and labelled]
    sentences: list[Sentence] = []
    strata: list[str] = []
    seen: dict[str, str] = {}
    snapped = 0
    rec: TableRecord
    for rec in table_records(p, fmt, needed):
        where = rec.where

        def fail(message: str, rec: TableRecord = rec) -> DataError:
            return DataError(p, rec.line, f"{rec.where}{message}")

        try:
            text = _text(rec.values, opts)
            if not isinstance(text, str) or not text.strip():
                raise SpanError(f"text in {opts.text_column!r} is {show(text)}; expected a non-empty string")
            spans = _record_spans(rec.values, opts, csv_like) if labelled else []
            if spans is None:
                raise SpanError(f"no spans: none of the keys {', '.join(SPAN_KEYS)} (or Label Studio "
                                "'annotations'); set data.spans_column, or use [] for a text without entities")
            words, offsets, tags, n = spans_to_iob2(text, spans, snap=opts.snap)
        except SpanError as err:
            raise fail(str(err)) from None
        if not words:
            raise fail("the text has no words")
        snapped += n
        example_id = rec.default_id
        if opts.id_column is not None and labelled:
            value = rec.values.get(opts.id_column)
            if value is None or not str(value).strip():
                raise fail(f"empty id in {opts.id_column!r}; expected a unique id")
            example_id = str(value).strip()
        if example_id in seen:
            raise fail(f"duplicate id {example_id!r} (first at {seen[example_id]}); expected each id once")
        seen[example_id] = where.removesuffix(": ") or f"row {rec.line}"
        sentences.append(Sentence(words, tags, rec.line or len(sentences) + 1, text=text,
                                  offsets=tuple(offsets), id=example_id))
        if opts.stratify_column is not None and labelled:
            strata.append(str(rec.values.get(opts.stratify_column, "")))
        else:
            strata.append("|".join(sorted({t[2:] for t in tags if t != "O"})) or "O")
    if not sentences:
        raise DataError(p, None, "no records; expected one text with its spans per row or line")
    if snapped:
        log.warning("%s: %d spans snapped to word boundaries or to the end of the text (data.snap_spans)", p, snapped)
    return sentences, strata
