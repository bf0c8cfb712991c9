"""Reading tables (CSV, TSV, JSON Lines, JSON arrays) and text files into records that remember their row.

Why one module: the classification readers, the NER span reader and the answer-selection reader all read
user tables, and a mistake in any of them must give the same one-line :class:`~experiments.errors.DataError`
(file, row or line, what was expected). Row numbers count the CSV header as row 1, as a spreadsheet does;
JSON Lines report physical lines; records of a JSON array report ``record N``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, DataError
from experiments.tasks.io import read_input_bytes

__all__ = ["TABLE_FORMATS", "TableRecord", "read_text_file", "table_format", "table_records", "scalar",
           "parse_json", "physical_lines", "show", "require"]

PathLike = str | os.PathLike[str]

TABLE_FORMATS = ("csv", "tsv", "jsonl", "json")
_EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}
_UTF8_BOM = b"\xef\xbb\xbf"


def read_text_file(path: PathLike) -> str:
    """Read a whole text file as UTF-8, falling back to Latin-1 for the whole file.

    A leading UTF-8 byte-order mark is removed. If the bytes are not valid UTF-8 the file is decoded as
    ISO-8859-1 (Latin-1), which never fails; the choice is made once per file, never per line. Line
    endings are left untouched (the CSV reader needs them).

    Args:
        path: the file.

    Returns:
        The decoded text.

    Raises:
        DataError: the file does not exist or is a directory (line ``None``), or it contains a NUL byte
            (line of the first one): a UTF-16 or binary file, not text.

    Format source: Financial PhraseBank v1.0 README (ISO-8859-1 files) and shared/data/MANIFEST.md (our
    AllAgree copy and banking77/Bitext are UTF-8; WNUT-17 dev starts with a BOM).
    """
    data = read_input_bytes(path, "UTF-8 or Latin-1 text")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]} ({len(text):,} characters)"


def physical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) over ``\\n``/``\\r\\n`` lines only.

    ``str.splitlines`` is not used: it also splits on U+0085, U+2028 and friends, which Latin-1 text and
    JSON strings may legitimately contain, and the line numbers would then disagree with an editor's.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        yield number, line.removesuffix("\r")


def parse_json(p: Path, text: str, line: int | None, expected: str = "") -> Any:
    """``json.loads`` whose failures are all :class:`DataError`.

    Besides syntax errors (``JSONDecodeError``, with its line: ``line`` is the line the text starts on,
    or None for a whole file), ``json`` raises ``RecursionError`` on deeply nested arrays or objects and
    a plain ``ValueError`` on integers of more than 4300 digits (CPython's int conversion limit).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = exc.lineno if line is None else line + exc.lineno - 1
        raise DataError(p, where, f"invalid JSON ({exc.msg} at column {exc.colno}){expected}") from None
    except RecursionError:
        raise DataError(p, line, f"invalid JSON (nested too deeply to read){expected}") from None
    except ValueError as exc:  # int() digit limit
        raise DataError(p, line, f"invalid JSON ({exc}){expected}") from None


@dataclass(frozen=True)
class TableRecord:
    """One record of a table: its values by column and where it came from (for messages)."""

    line: int | None  # physical line (JSONL) or row (CSV/TSV); None inside a JSON array
    where: str  # prefix for messages when line is None ("record 3: "), else ""
    default_id: str
    values: Mapping[str, Any]


def table_format(p: Path, fmt: str | None) -> str:
    if fmt is not None:
        key = fmt.strip().lower().lstrip(".")
        if key == "ndjson":
            key = "jsonl"
        if key not in TABLE_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(TABLE_FORMATS)}; got {fmt!r}")
        return key
    suffix = p.suffix.lower()
    if suffix not in _EXTENSION_FORMATS:
        raise DataError(
            p,
            None,
            f"cannot tell the format from the extension {suffix!r}; expected .csv, .tsv, .jsonl or "
            ".json, or pass format='csv'|'tsv'|'jsonl'|'json'",
        )
    return _EXTENSION_FORMATS[suffix]


def csv_records(p: Path, text: str, fmt: str, needed: Sequence[str]) -> Iterator[TableRecord]:
    if fmt == "tsv":
        # IANA text/tab-separated-values: no quoting, fields cannot hold tabs or line breaks, and a '"'
        # is an ordinary character.
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True
        )
        sep_name = "tab"
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        sep_name = "comma"
    header: list[str] | None = None
    row = 0
    end_line = 0
    while True:
        start_line = end_line + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise DataError(
                    p,
                    row + 1,
                    f"a field of the row starting on line {start_line} is longer than "
                    f"{csv.field_size_limit()} characters; expected texts shorter than that (is a quote "
                    f"left open, or is this not a {fmt.upper()} file?)",
                ) from None
            raise DataError(
                p,
                row + 1,
                f"bad {fmt.upper()} quoting ({exc}) in the row starting on line {start_line}; expected "
                "a quoted field to end with '\"' followed by a separator or line end, with inner quotes doubled",
            ) from None
        row += 1
        end_line = reader.line_num
        if header is None:
            if not fields or all(not f.strip() for f in fields):
                raise DataError(
                    p, row, f"empty header row; expected column names such as {', '.join(needed)}"
                )
            header = [f.strip() for f in fields]
            found = ", ".join(repr(h) for h in header)
            for name in needed:
                if name not in header:
                    raise DataError(
                        p,
                        row,
                        f"no column {name!r}; columns found: {found}; expected columns {', '.join(needed)}",
                    )
                if header.count(name) > 1:
                    raise DataError(
                        p, row, f"column {name!r} appears {header.count(name)} times; expected once"
                    )
            continue
        if not fields:  # a blank line: counted as a row (as a spreadsheet does) but holds no example
            continue
        if len(fields) != len(header):
            starts = f" (starts on line {start_line})" if start_line != row else ""
            raise DataError(
                p,
                row,
                f"{len(fields)} fields{starts}; expected {len(header)} as in the header "
                f"(a {sep_name} inside a field must be quoted in CSV; TSV fields cannot hold tabs)",
            )
        yield TableRecord(
            line=row,
            where="" if start_line == row else f"(starts on line {start_line}) ",
            default_id=str(row),
            values=dict(zip(header, fields, strict=True)),
        )
    if header is None:
        raise DataError(
            p, None, f"empty file; expected a header row with columns such as {', '.join(needed)}"
        )


def json_records(p: Path, text: str) -> Iterator[TableRecord]:
    if text.lstrip().startswith("["):  # a .json file holding one array of objects
        data = parse_json(p, text, None, "; expected a JSON array of objects, or one JSON object per line")
        for number, value in enumerate(data, 1):
            if not isinstance(value, dict):
                raise DataError(p, None, f"record {number}: {type(value).__name__}; expected a JSON object")
            yield TableRecord(line=None, where=f"record {number}: ", default_id=str(number), values=value)
        return
    for number, line in physical_lines(text):
        if not line.strip():
            continue
        value = parse_json(p, line, number, "; expected one JSON object per line")
        if not isinstance(value, dict):
            raise DataError(p, number, f"{type(value).__name__} on this line; expected a JSON object")
        yield TableRecord(line=number, where="", default_id=str(number), values=value)


def scalar(p: Path, rec: TableRecord, column: str, value: Any, what: str) -> str:
    """A JSON value that must be a string (ints allowed for ids and labels)."""
    if isinstance(value, str):
        return value
    if what in ("id", "label") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else f"{shown[:55]}... ({len(shown):,} characters)"
    raise DataError(p, rec.line, f"{rec.where}{what} in {column!r} is {shown}; expected a string")


def require(p: Path, rec: TableRecord, needed: Sequence[str]) -> None:
    """Check that ``rec`` has every key of ``needed`` (JSON records: each has its own keys).

    Raises:
        DataError: a key is missing; the message lists the keys found.
    """
    for name in needed:
        if name not in rec.values:
            found = ", ".join(repr(k) for k in rec.values)
            raise DataError(p, rec.line, f"{rec.where}no key {name!r}; keys found: {found}; expected keys "
                            f"{', '.join(needed)}")


def table_records(p: Path, fmt: str, needed: Sequence[str]) -> Iterator[TableRecord]:
    """The records of table ``p`` in format ``fmt`` (from :func:`table_format`).

    ``needed`` columns are checked in the CSV/TSV header (JSON records are checked by the caller, since
    each record has its own keys).

    Raises:
        DataError: see :func:`read_text_file`, bad quoting, a missing or repeated column, a row with the
            wrong number of fields, a JSON line that does not parse or is not an object.
    """
    text = read_text_file(p)
    return csv_records(p, text, fmt, needed) if fmt in ("csv", "tsv") else json_records(p, text)
