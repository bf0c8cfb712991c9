"""Read sentence-classification data into one record type, :class:`Example`, and split it reproducibly.

Why a module of its own: every public data set here has its own format and its own trap, and a
training run that silently reads them wrong (a mis-decoded accent, a sentence cut at the wrong ``@``,
a multi-line quoted field counted as three rows) still trains and still prints a number. So each reader
checks what it reads and fails with :class:`~experiments.errors.DataError` naming the file, the line or
row, and what was expected, and the rest of the code sees only :class:`Example` values.

The formats (see ``shared/data/MANIFEST.md`` for where each file comes from):

* Financial PhraseBank v1.0 (Malo et al. 2014): ``sentence@label`` lines. The 50/66/75-agreement files
  are ISO-8859-1, the AllAgree file in our copy is UTF-8, hence :func:`read_text_file`'s per-file
  fallback. The original release already carries mojibake such as ``Sepp+ñl+ñ`` (for Seppälä); it is
  kept as is, since both encodings decode to the same text.
* FiQA-2018 task 1 (aspect-based financial sentiment): a JSON object ``id -> {sentence, info}`` with a
  continuous score per target, thresholded into three classes by :func:`read_fiqa`.
* banking77 (PolyAI), Bitext customer support and the user's own files: CSV / TSV / JSON Lines tables,
  read by :func:`read_table` with the :mod:`csv` module (quoted fields may span lines, as Bitext's
  responses do).
* CLINC150 (clinc/oos-eval ``data_full.json``): split name -> list of ``[text, intent]``, with the
  out-of-scope rows in separate ``oos_*`` splits; :func:`read_clinc150` offers three ways to use them.

Line numbers: text formats report 1-based physical lines; CSV/TSV report *rows* (records), counting the
header as row 1, so row 2 is the first data row, as a spreadsheet shows it. A quoted field spanning
several lines is still one row; the error message then also gives the line the row starts on.

:func:`stratified_split` makes train/validation/test index lists that are the same on every machine and
every Python version (it never uses Python's salted ``hash()``), and :func:`write_split_ids` records them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, DataError
from experiments.tasks.splits import stratified_split, write_split_ids
from experiments.tasks.tables import TABLE_FORMATS, read_text_file
from experiments.tasks.tables import TableRecord as _Record
from experiments.tasks.tables import parse_json as _parse_json
from experiments.tasks.tables import physical_lines as _physical_lines
from experiments.tasks.tables import require as _require
from experiments.tasks.tables import scalar as _scalar
from experiments.tasks.tables import show as _show
from experiments.tasks.tables import table_format as _table_format
from experiments.tasks.tables import table_records as _table_records

__all__ = [
    "Example",
    "read_text_file",
    "read_phrasebank",
    "phrasebank_file",
    "read_fiqa",
    "read_table",
    "read_banking77",
    "read_clinc150",
    "read_bitext",
    "stratified_split",
    "write_split_ids",
    "PHRASEBANK_LABELS",
    "PHRASEBANK_FILES",
    "CLINC_OOS_LABEL",
    "CLINC_OOS_MODES",
    "DEFAULT_LABEL_DELIMITER",
    "TABLE_FORMATS",
]

PathLike = str | os.PathLike[str]

PHRASEBANK_LABELS = ("negative", "neutral", "positive")
PHRASEBANK_FILES = {
    "50": "Sentences_50Agree.txt",
    "66": "Sentences_66Agree.txt",
    "75": "Sentences_75Agree.txt",
    "all": "Sentences_AllAgree.txt",
}
FIQA_LABELS = ("negative", "neutral", "positive")
CLINC_OOS_LABEL = "oos"
CLINC_OOS_MODES = ("class", "threshold", "exclude")
# (our split name, in-scope key, out-of-scope key) in clinc/oos-eval's data_*.json files.
_CLINC_SPLITS = (
    ("train", "train", "oos_train"),
    ("validation", "val", "oos_val"),
    ("test", "test", "oos_test"),
)
BITEXT_LABELS = ("intent", "category")
_FIQA_FORM = "a JSON object mapping id -> {sentence, info: [...]} (FiQA task 1)"
_CLINC_FORM = "a JSON object of splits (train, val, test, oos_train, oos_val, oos_test)"
DEFAULT_LABEL_DELIMITER = "|"


@dataclass(frozen=True)
class Example:
    """One text to classify.

    Attributes:
        text: the sentence (leading and trailing whitespace removed).
        label: the gold label; a tuple of labels for multi-label data; ``None`` for unlabelled
            (prediction) files.
        text_pair: the second text of a pair task (e.g. the FiQA target entity), else ``None``.
        id: stable and unique within its source file: the line or row number, or the data set's own id.
        line: 1-based line (text/JSON Lines) or row (CSV/TSV, header = row 1) the example came from;
            ``None`` for whole-file JSON formats.
    """

    text: str
    label: str | tuple[str, ...] | None
    text_pair: str | None = None
    id: str = ""
    line: int | None = None


def _load_json(p: Path, expected: str) -> Any:
    return _parse_json(p, read_text_file(p), None, f"; expected {expected}")


# ----------------------------------------------------------------------------------- Financial PhraseBank


def read_phrasebank(path: PathLike) -> list[Example]:
    """Read one Financial PhraseBank file (``sentence@label`` per line).

    The line is split on its *last* ``@``, so an ``@`` inside the sentence is kept. Blank lines are
    skipped. The id of an example is its line number.

    Args:
        path: e.g. ``Sentences_50Agree.txt`` (see :func:`phrasebank_file`).

    Returns:
        One :class:`Example` per non-blank line, in file order, label one of ``PHRASEBANK_LABELS``.

    Raises:
        DataError: a line has no ``@``, an empty sentence, a label other than negative/neutral/positive,
            or a carriage return inside it (``\\r``-only line endings), with its line number; the file has
            no examples at all (line ``None``); the file cannot be read (see :func:`read_text_file`).

    Format source: Malo et al. 2014, "Good debt or bad debt", Financial PhraseBank v1.0 README.txt.
    """
    p = Path(path)
    expected = "expected 'sentence@label' with label one of " + ", ".join(PHRASEBANK_LABELS)
    examples: list[Example] = []
    for number, line in _physical_lines(read_text_file(p)):
        if not line.strip():
            continue
        if "\r" in line:
            raise DataError(
                p,
                number,
                f"carriage return inside the line (classic Mac OS line endings?); {expected}, one per "
                "line ending in \\n or \\r\\n",
            )
        sentence, sep, label = line.rpartition("@")
        if not sep:
            raise DataError(p, number, f"no '@' in the line; {expected}")
        label = label.strip()
        sentence = sentence.strip()
        if label not in PHRASEBANK_LABELS:
            raise DataError(p, number, f"label {_show(label)} after the last '@'; {expected}")
        if not sentence:
            raise DataError(p, number, f"empty sentence before '@'; {expected}")
        examples.append(Example(text=sentence, label=label, id=str(number), line=number))
    if not examples:
        raise DataError(p, None, f"no examples; {expected}, one per line")
    return examples


def phrasebank_file(data_dir: PathLike, agreement: str = "50") -> Path:
    """Locate the Financial PhraseBank file for an annotator-agreement level.

    Args:
        data_dir: the folder holding ``Sentences_*Agree.txt``, or a folder above it
            (``financial_phrasebank/``, ``finsent/financial_phrasebank/`` or ``FinancialPhraseBank-v1.0/``
            inside it are also searched).
        agreement: ``"50"``, ``"66"``, ``"75"`` or ``"all"`` (share of the 5-8 annotators who agreed;
            ``"50Agree"``, ``"AllAgree"``, ``"100"`` and the integers 50/66/75/100 are accepted too).

    Returns:
        The path of the existing file.

    Raises:
        ConfigError: unknown agreement level.
        DataError: the file is in none of the searched folders (line ``None``).

    Format source: Financial PhraseBank v1.0 file names.
    """
    key = str(agreement).strip().lower().removesuffix("agree")
    if key == "100":
        key = "all"
    if key not in PHRASEBANK_FILES:
        raise ConfigError(f"agreement must be one of '50', '66', '75', 'all'; got {agreement!r}")
    name = PHRASEBANK_FILES[key]
    base = Path(data_dir)
    candidates = [
        base,
        base / "financial_phrasebank",
        base / "finsent" / "financial_phrasebank",
        base / "FinancialPhraseBank-v1.0",
    ]
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(c) for c in candidates)
    raise DataError(base, None, f"{name} not found (searched {searched}); expected Financial PhraseBank v1.0")


# ---------------------------------------------------------------------------------------------- FiQA


def _fiqa_score(p: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(p, None, f"{where}: sentiment_score {_show(value)}; expected a number from -1 to 1")
    try:
        score = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise DataError(
            p, None, f"{where}: sentiment_score {_show(value)}; expected a number from -1 to 1"
        ) from None
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise DataError(p, None, f"{where}: sentiment_score {_show(value)}; expected a number from -1 to 1")
    return score


def read_fiqa(
    paths: PathLike | Sequence[PathLike],
    *,
    negative_below: float = -0.1,
    positive_above: float = 0.1,
) -> list[Example]:
    """Read FiQA-2018 task 1 (aspect-based financial sentiment) as 3-class target-sentiment pairs.

    Each file is a JSON object ``id -> {"sentence": str, "info": [{"target": str, "sentiment_score":
    "-0.374", "snippets": ..., "aspects": ...}, ...]}``. One :class:`Example` is made per (sentence,
    target): ``text`` is the sentence, ``text_pair`` the target, ``id`` is ``f"{json_id}:{k}"`` with
    ``k`` the 0-based position in ``info``.

    The continuous score (from -1 to 1) is thresholded with strict inequalities:
    ``score < negative_below`` is ``"negative"``, ``score > positive_above`` is ``"positive"``, anything
    else, the boundary values included, is ``"neutral"``. With the defaults -0.1 and 0.1, a score of
    exactly -0.1 or 0.1 is neutral.

    Args:
        paths: one file or several (e.g. headline and post training files). Ids are the data set's own
            and must not repeat across the files given.
        negative_below: scores strictly below this are negative.
        positive_above: scores strictly above this are positive.

    Returns:
        The examples, file by file in the given order, in each file's key order.

    Raises:
        ConfigError: ``negative_below > positive_above``.
        DataError: invalid JSON (with its line), a record without a non-empty sentence or info list, a
            target that is not a non-empty string, a score that is not a number in [-1, 1], or an id
            repeated across the given files (line ``None`` for record errors: the file is one JSON value).

    Format source: FiQA-2018 challenge task 1 Readme.pdf (elinsky/fiqa copy, see MANIFEST.md).
    """
    if not negative_below <= positive_above:
        raise ConfigError(
            f"negative_below ({negative_below}) must not exceed positive_above ({positive_above})"
        )
    path_list = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    seen: dict[str, Path] = {}
    examples: list[Example] = []
    for path in path_list:
        p = Path(path)
        data = _load_json(p, _FIQA_FORM)
        if not isinstance(data, dict):
            raise DataError(p, None, f"expected {_FIQA_FORM}")
        for json_id, record in data.items():
            where = f"record {json_id!r}"
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("sentence"), str)
                or not isinstance(record.get("info"), list)
            ):
                raise DataError(
                    p,
                    None,
                    f"{where}: expected {{'sentence': str, 'info': [{{'target', 'sentiment_score'}}]}}",
                )
            sentence = record["sentence"].strip()
            if not sentence:
                raise DataError(p, None, f"{where}: empty sentence; expected the headline or post text")
            if json_id in seen:
                raise DataError(p, None, f"{where}: id also in {seen[json_id]}; expected each file once")
            seen[json_id] = p
            for k, info in enumerate(record["info"]):
                item = f"{where} info[{k}]"
                if not isinstance(info, dict):
                    raise DataError(
                        p, None, f"{item}: expected an object with 'target' and 'sentiment_score'"
                    )
                target = info.get("target")
                if not isinstance(target, str) or not target.strip():
                    raise DataError(p, None, f"{item}: target {_show(target)}; expected a non-empty string")
                score = _fiqa_score(p, item, info.get("sentiment_score"))
                if score < negative_below:
                    label = "negative"
                elif score > positive_above:
                    label = "positive"
                else:
                    label = "neutral"
                examples.append(
                    Example(
                        text=sentence, label=label, text_pair=target.strip(), id=f"{json_id}:{k}", line=None
                    )
                )
    return examples



def _nonempty_text(p: Path, rec: Any, column: str, what: str, expected: str) -> str:
    """The stripped text of ``column`` in ``rec``; an empty one is a :class:`DataError` naming the row."""
    text = _scalar(p, rec, column, rec.values[column], "text").strip()
    if not text:
        raise DataError(p, rec.line, f"{rec.where}empty {what} in {column!r}; expected {expected}")
    return text


def _labels(
    p: Path, rec: _Record, column: str, value: Any, multi_label: bool, delimiter: str
) -> str | tuple[str, ...]:
    if value is None:
        raise DataError(p, rec.line, f"{rec.where}missing label in {column!r}; expected a label")
    if not multi_label:
        if isinstance(value, list):
            raise DataError(
                p, rec.line, f"{rec.where}a list in {column!r}; expected one label (multi_label=True?)"
            )
        label = _scalar(p, rec, column, value, "label").strip()
        if not label:
            raise DataError(p, rec.line, f"{rec.where}empty label in {column!r}; expected a label")
        return label
    if isinstance(value, list):
        parts = [_scalar(p, rec, column, v, "label") for v in value]
    else:
        parts = _scalar(p, rec, column, value, "label").split(delimiter)
    labels: list[str] = []
    for part in parts:
        part = part.strip()
        if part and part not in labels:
            labels.append(part)
    return tuple(labels)


def read_table(
    path: PathLike,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    id_column: str | None = None,
    multi_label: bool = False,
    label_delimiter: str | None = None,
    format: str | None = None,
) -> list[Example]:
    """Read a labelled (or unlabelled) table: CSV, TSV, JSON Lines, or a JSON array of objects.

    Format, from ``format`` or else the extension:

    * ``csv`` (``.csv``): RFC 4180 via :mod:`csv`; quoted fields may hold commas, doubled quotes and line
      breaks. The first row is the header (names are stripped of surrounding spaces).
    * ``tsv`` (``.tsv``, ``.tab``): tab-separated with *no* quoting (IANA text/tab-separated-values).
    * ``jsonl`` (``.jsonl``, ``.ndjson``): one JSON object per line; blank lines are skipped.
    * ``json`` (``.json``): a JSON array of objects, or else JSON Lines (decided by the first character).

    Text values are stripped of surrounding whitespace. Labels (JSON strings or integers) are stripped
    too. Multi-label values are a JSON list of labels, or a string split on ``label_delimiter``, whose
    default is ``"|"`` (``DEFAULT_LABEL_DELIMITER``; a comma would clash with CSV and with labels such as
    "cards, lost"); the result is a tuple of the non-empty labels in first-seen order without repeats,
    and an empty value means "no label applies", the empty tuple.

    The id is ``id_column``'s value when given (must be unique and non-empty), else the row number
    (CSV/TSV, header = row 1), the line number (JSON Lines) or the 1-based record number (JSON array).

    Args:
        path: the file.
        text_column: column holding the text.
        label_column: column holding the label(s); ``None`` for prediction files (labels ``None``).
        text_pair_column: optional column holding a second text (sentence-pair tasks).
        id_column: optional column holding the example id.
        multi_label: labels are sets (tuples) instead of one string.
        label_delimiter: separator of labels in a string value when ``multi_label``; default ``"|"``.
        format: ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"json"``; ``None`` decides by the extension.

    Returns:
        The examples in file order; a header-only file gives an empty list.

    Raises:
        ConfigError: unknown ``format`` or an empty ``label_delimiter``.
        DataError: unknown extension (line ``None``); a missing column, listing the columns found (header
            row 1 for CSV/TSV, the record's line for JSON); an empty text or text pair, a missing or empty
            single label, a duplicate or empty id, a row with the wrong number of fields, bad CSV quoting,
            a JSON line that does not parse or is not an object, a non-string text (all with the row or
            line); an empty CSV/TSV file; and the errors of :func:`read_text_file`.

    Format source: RFC 4180 (CSV), IANA text/tab-separated-values, https://jsonlines.org; banking77 and
    Bitext CSVs per shared/data/MANIFEST.md.
    """
    p = Path(path)
    fmt = _table_format(p, format)
    delimiter = DEFAULT_LABEL_DELIMITER if label_delimiter is None else label_delimiter
    if multi_label and not delimiter:
        raise ConfigError("label_delimiter must be a non-empty string")
    needed = [c for c in (text_column, label_column, text_pair_column, id_column) if c is not None]
    records = _table_records(p, fmt, needed)
    examples: list[Example] = []
    ids: dict[str, int | str] = {}
    for rec in records:
        values = rec.values
        _require(p, rec, needed)
        sentence = _nonempty_text(p, rec, text_column, "text", "the text to classify")
        pair = None
        if text_pair_column is not None:
            pair = _nonempty_text(p, rec, text_pair_column, "text pair", "a text")
        label = None
        if label_column is not None:
            label = _labels(p, rec, label_column, values[label_column], multi_label, delimiter)
        example_id = rec.default_id
        if id_column is not None:
            example_id = _scalar(p, rec, id_column, values[id_column], "id").strip()
            if not example_id:
                raise DataError(p, rec.line, f"{rec.where}empty id in {id_column!r}; expected a unique id")
            if example_id in ids:
                raise DataError(
                    p,
                    rec.line,
                    f"{rec.where}duplicate id {example_id!r} (first at {ids[example_id]}); "
                    f"expected each id in {id_column!r} once",
                )
            ids[example_id] = rec.line if rec.line is not None else rec.where.removesuffix(": ")
        examples.append(Example(text=sentence, label=label, text_pair=pair, id=example_id, line=rec.line))
    return examples


def read_banking77(path: PathLike) -> list[Example]:
    """Read a banking77 split (``train.csv`` or ``test.csv``).

    Args:
        path: the CSV file, columns ``text,category``.

    Returns:
        One :class:`Example` per row; label is the intent (``category``); id is the row number.

    Raises:
        DataError: see :func:`read_table`.

    Format source: PolyAI-LDN/task-specific-datasets ``banking_data/`` (Casanueva et al. 2020).
    """
    return read_table(path, text_column="text", label_column="category", format="csv")


def read_bitext(path: PathLike, *, label: str = "intent") -> list[Example]:
    """Read the Bitext customer-support CSV; the text is the customer's ``instruction``.

    Args:
        path: ``Bitext_Sample_Customer_Support_Training_Dataset.csv`` (columns include ``instruction``,
            ``intent``, ``category``; ``response`` fields are quoted and span several lines).
        label: ``"intent"`` (27 fine intents) or ``"category"`` (11 coarse categories).

    Returns:
        One :class:`Example` per row; id is the row number (header = row 1).

    Raises:
        ConfigError: ``label`` is neither ``"intent"`` nor ``"category"``.
        DataError: see :func:`read_table`.

    Format source: bitext/customer-support-llm-chatbot-training-dataset (4.5K sample CSV, MANIFEST.md).
    """
    if label not in BITEXT_LABELS:
        raise ConfigError(f"label must be 'intent' or 'category'; got {label!r}")
    return read_table(path, text_column="instruction", label_column=label, format="csv")


# -------------------------------------------------------------------------------------------- CLINC150


def _clinc_rows(p: Path, data: Mapping[str, Any], key: str, out_of_scope: bool) -> list[Example]:
    rows = data[key]
    if not isinstance(rows, list):
        raise DataError(p, None, f"split {key!r} is {type(rows).__name__}; expected a list of [text, intent]")
    examples: list[Example] = []
    for i, item in enumerate(rows):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise DataError(
                p, None, f"split {key!r} item {i}: {json.dumps(item)[:80]}; expected [text, intent]"
            )
        text, intent = item[0].strip(), item[1].strip()
        if not text:
            raise DataError(p, None, f"split {key!r} item {i}: empty text; expected an utterance")
        if out_of_scope:
            intent = CLINC_OOS_LABEL
        elif not intent or intent == CLINC_OOS_LABEL:
            raise DataError(
                p, None, f"split {key!r} item {i}: intent {intent!r}; expected an in-scope intent"
            )
        examples.append(Example(text=text, label=intent, id=f"{key}:{i}", line=None))
    return examples


def read_clinc150(path: PathLike, *, oos: str = "class") -> dict[str, list[Example]]:
    """Read CLINC150 (``data_full.json``) into train/validation/test, handling out-of-scope rows.

    The file maps ``train``, ``val``, ``test``, ``oos_train``, ``oos_val``, ``oos_test`` to lists of
    ``[text, intent]``. Out-of-scope rows get the label ``"oos"`` (``CLINC_OOS_LABEL``). Modes:

    * ``"class"``: out-of-scope rows are kept in every split as one more class (151 classes).
    * ``"threshold"``: dropped from train (the model learns the 150 intents only), kept in validation
      and test labelled ``"oos"``, for rejecting low-confidence predictions with a tuned threshold.
    * ``"exclude"``: dropped everywhere (150-way in-scope accuracy only).

    Within a split, in-scope rows come first, then out-of-scope rows, each in file order. Ids are
    ``f"{key}:{i}"`` (e.g. ``"val:12"``, ``"oos_test:3"``), unique within the file.

    Args:
        path: ``data_full.json`` (``data_small``/``data_imbalanced``/``data_oos_plus`` have the same
            layout), or the folder holding ``data_full.json``.
        oos: ``"class"``, ``"threshold"`` or ``"exclude"``.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``.

    Raises:
        ConfigError: unknown ``oos`` mode.
        DataError: invalid JSON (with its line), a missing split (listing the keys found), an item that is
            not ``[text, intent]``, an empty text, or an in-scope row labelled ``"oos"`` (line ``None``).

    Format source: clinc/oos-eval ``data/data_full.json`` (Larson et al. 2019, EMNLP).
    """
    if oos not in CLINC_OOS_MODES:
        raise ConfigError(f"oos must be one of {', '.join(CLINC_OOS_MODES)}; got {oos!r}")
    p = Path(path)
    if p.is_dir():
        p = p / "data_full.json"
    data = _load_json(p, _CLINC_FORM)
    if not isinstance(data, dict):
        raise DataError(p, None, f"expected {_CLINC_FORM}")
    missing = [key for _, ins, out in _CLINC_SPLITS for key in (ins, out) if key not in data]
    if missing:
        found = ", ".join(repr(k) for k in data)
        raise DataError(
            p, None, f"missing split(s) {', '.join(missing)}; keys found: {found}; expected {_CLINC_FORM}"
        )
    result: dict[str, list[Example]] = {}
    for name, in_key, oos_key in _CLINC_SPLITS:
        examples = _clinc_rows(p, data, in_key, out_of_scope=False)
        if oos == "class" or (oos == "threshold" and name != "train"):
            examples += _clinc_rows(p, data, oos_key, out_of_scope=True)
        result[name] = examples
    return result

