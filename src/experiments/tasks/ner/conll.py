"""Reading and writing CoNLL column files, and converting their tag schemes to IOB2.

Why a reader of our own: the NER corpora we train on are all "one token per line, blank line between
sentences", but each bends the format differently. CoNLL-2003 has four space-separated columns and
``-DOCSTART-`` lines; WNUT-17 is tab-separated and its dev file carries stray UTF-8 byte-order marks;
Weibo NER glues a word-position digit onto every character (``科0``); Resume NER uses the BMES scheme.
``datasets`` loading scripts hide these quirks per corpus, or fail with a traceback from deep inside a
library. This module reads any of them into one form, :class:`Sentence` with IOB2 tags, and turns
every malformed input into a :class:`~experiments.errors.DataError` that names the file, the line and
what was expected there.

Tag schemes (every tag is ``O`` or ``<prefix>-<type>``):

* IOB1 and IOB2: Tjong Kim Sang & Veenstra, "Representing Text Chunks", EACL 1999
  (arXiv:cs/9907006). IOB1 (Ramshaw & Marcus 1995) starts an entity with ``I-`` and uses ``B-`` only
  to separate two adjacent entities of the same type; IOB2 starts every entity with ``B-``.
  CoNLL-2003 as distributed here, WNUT-17 and Weibo NER are IOB2.
* BIOES (also written BILOU: ``L-`` = ``E-`` last, ``U-`` = ``S-`` unit): Ratinov & Roth, "Design
  Challenges and Misconceptions in Named Entity Recognition", CoNLL 2009.
* BMES (Begin, Middle, End, Single), as used for Chinese NER by Zhang & Yang, "Chinese NER Using
  Lattice LSTM", ACL 2018 (the Resume NER corpus).

Everything downstream (label sets, seqeval scoring) works on IOB2 only, so the reader converts once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.errors import DataError
from experiments.tasks.io import read_input_bytes

__all__ = [
    "SCHEMES",
    "Sentence",
    "read_conll",
    "detect_scheme",
    "to_iob2",
    "write_conll",
    "check_labels",
    "label_list",
]

#: Tag schemes :func:`to_iob2` understands (``"auto"`` is accepted too and means :func:`detect_scheme`).
SCHEMES = ("iob1", "iob2", "bioes", "bmes")

# For each scheme: prefix -> IOB2 prefix before repair. E/L/S/U close the entity they belong to.
_PREFIX_MAP: dict[str, dict[str, str]] = {
    "iob1": {"B": "B", "I": "I"},
    "iob2": {"B": "B", "I": "I"},
    "bioes": {"B": "B", "I": "I", "E": "I", "L": "I", "S": "B", "U": "B"},
    "bmes": {"B": "B", "M": "I", "E": "I", "S": "B"},
}
_CLOSING = frozenset("ELSU")
_DOCSTART = "-DOCSTART-"
_BOM = "\ufeff"
_WS_SPLIT = re.compile(r"[ \t]+")
_ASCII_DIGITS = "0123456789"


@dataclass(frozen=True)
class Sentence:
    """One sentence of a CoNLL file.

    Attributes:
        words: the tokens (characters for the Chinese corpora).
        tags: one IOB2 tag per token (after :func:`read_conll`'s conversion).
        line: 1-based line number, in the source file, of the sentence's first token. The tokens of a
            sentence are on consecutive lines, so token ``i`` is on line ``line + i``. For span files
            (:mod:`~experiments.tasks.ner.spans`): the record's row or line.
        text: the raw text the words were split from (span files), else ``None``.
        offsets: each word's ``(start, end)`` character offsets in ``text`` (span files), else ``None``.
        id: the record's id (span files), else ``None`` (the sentence's index in its file is its id).
    """

    words: list[str]
    tags: list[str]
    line: int
    text: str | None = None
    offsets: tuple[tuple[int, int], ...] | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise ValueError(
                f"sentence at line {self.line}: {len(self.words)} words but {len(self.tags)} tags"
            )


def _show(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]} ({len(value):,} characters)"


class _TagError(ValueError):
    """A tag that is not ``O`` or ``<prefix>-<type>`` with a prefix of the scheme; knows its position."""

    def __init__(self, index: int, tag: str, scheme: str):
        self.index = index
        self.tag = tag
        self.scheme = scheme
        prefixes = ", ".join(f"{p}-" for p in _PREFIX_MAP[scheme])
        super().__init__(
            f"tag {_show(tag)} is not valid in the {scheme.upper()} scheme; expected 'O' or a prefix "
            f"({prefixes}) followed by an entity type, e.g. '{next(iter(_PREFIX_MAP[scheme]))}-PER'"
        )


def detect_scheme(tags: Iterable[str]) -> str:
    """Guess the tag scheme of a file from all its tags.

    Rules, in order:

    1. any ``M-`` prefix -> ``"bmes"``;
    2. any ``E-``, ``S-``, ``L-`` or ``U-`` prefix -> ``"bioes"`` (BILOU is read as BIOES);
    3. some entity starts with ``I-`` (the previous tag is ``O``, the start, or another type) and every
       ``B-X`` directly follows an ``X`` tag (``B-`` only separates adjacent same-type entities)
       -> ``"iob1"``;
    4. otherwise ``"iob2"`` (also for a file of ``O`` tags only).

    A file mixing IOB1-style ``I-`` starts with ``B-`` starts is reported as ``"iob2"``; its ``I-``
    starts are then repaired by :func:`to_iob2` exactly as IOB1 would be, so the result is the same.
    Malformed tags are ignored here; :func:`to_iob2` rejects them. When the tags of several sentences
    are chained, put an ``"O"`` between sentences so that no entity seems to continue across them.

    Args:
        tags: the tags, in file order.

    Returns:
        One of ``"iob1"``, ``"iob2"``, ``"bioes"``, ``"bmes"``.
    """
    has_m = has_closing = i_starts = b_starts = False
    prev_type: str | None = None
    for tag in tags:
        prefix, sep, typ = tag.partition("-")
        if tag == "O" or not sep:
            prev_type = None
            continue
        if prefix == "M":
            has_m = True
        elif prefix in _CLOSING:
            has_closing = True
        elif prefix == "I" and prev_type != typ:
            i_starts = True
        elif prefix == "B" and prev_type != typ:
            b_starts = True
        prev_type = typ
    if has_m:
        return "bmes"
    if has_closing:
        return "bioes"
    if i_starts and not b_starts:
        return "iob1"
    return "iob2"


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Convert one sentence's tags to IOB2.

    Conversion tables (``X`` is the entity type, kept as is, e.g. ``creative-work`` or ``PER.NAM``):

    * IOB1: ``B-X`` stays; an ``I-X`` that does not continue an ``X`` entity becomes ``B-X``.
    * BIOES / BILOU: ``B-`` -> ``B-``, ``I-`` -> ``I-``, ``E-``/``L-`` -> ``I-``, ``S-``/``U-`` -> ``B-``.
    * BMES: ``B-`` -> ``B-``, ``M-`` -> ``I-``, ``E-`` -> ``I-``, ``S-`` -> ``B-``.
    * IOB2: validated. An ``I-X`` after ``O``, after another type, or at the sentence start violates
      IOB2; it is repaired to ``B-X``, which is how seqeval and conlleval read it (they start a new
      chunk there), so scores do not change.

    The same repair runs after every conversion: in BIOES/BMES an ``E-``/``S-``/``L-``/``U-`` closes
    its entity, so an ``I-X``/``M-X``/``E-X`` right after it, or after ``O``, starts a new ``B-X``.

    Args:
        tags: one sentence's tags.
        scheme: ``"iob1"``, ``"iob2"``, ``"bioes"``, ``"bmes"``, or ``"auto"`` (:func:`detect_scheme`
            on these tags alone; prefer detecting once per file).

    Returns:
        The IOB2 tags, a new list of the same length.

    Raises:
        ValueError: unknown scheme, or a tag that is not ``O`` or ``<prefix>-<type>`` with a prefix
            valid for the scheme (the message names the tag; :func:`read_conll` adds file and line).
    """
    if scheme == "auto":
        scheme = detect_scheme(tags)
    if scheme not in _PREFIX_MAP:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)} or 'auto'")
    mapping = _PREFIX_MAP[scheme]
    out: list[str] = []
    open_type: str | None = None  # type of the entity the next I- may continue
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
            open_type = None
            continue
        prefix, sep, typ = tag.partition("-")
        if not sep or not typ or prefix not in mapping:
            raise _TagError(i, tag, scheme)
        new = mapping[prefix]
        if new == "I" and open_type != typ:
            new = "B"
        out.append(f"{new}-{typ}")
        open_type = None if prefix in _CLOSING else typ
    return out


def _required_columns(token_column: int, tag_column: int) -> int:
    """Fewest columns a line needs so that the token and tag columns exist and differ."""
    need = max(c + 1 if c >= 0 else -c for c in (token_column, tag_column))
    return max(need, 2)


def _strip_position_digits(text: str) -> str | None:
    """``科0`` -> ``科``; ``p10`` -> ``p``; ``01`` -> ``0`` (a digit character). None without digit."""
    head = text.rstrip(_ASCII_DIGITS)
    if head == text:
        return None
    if head:
        return head
    return text[0] if len(text) >= 2 else None


def _decode(path: Path) -> str:
    data = read_input_bytes(path, "a UTF-8 CoNLL column file, one token per line")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            path,
            line,
            f"byte 0x{data[err.start]:02x} at byte column {column} is not valid UTF-8; expected UTF-8 text "
            "(convert the file first, e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def read_conll(
    path: str | os.PathLike[str],
    *,
    token_column: int = 0,
    tag_column: int = -1,
    separator: str | None = None,
    char_digit_tokens: bool = False,
    scheme: str = "auto",
) -> list[Sentence]:
    """Read a CoNLL column file into sentences with IOB2 tags.

    Format: one token per line, its fields separated by ``separator``; a blank line (or several) ends a
    sentence; ``-DOCSTART-`` lines are skipped and also end a sentence; the last sentence needs no
    trailing blank line. UTF-8 only. Byte-order marks (U+FEFF) are removed wherever they occur (the
    WNUT-17 dev file has one glued to a token and one alone on its last line); ``\\r\\n`` endings are
    accepted. A line of whitespace only counts as blank.

    Args:
        path: the file.
        token_column: index of the token field (negative counts from the end).
        tag_column: index of the tag field; default the last one.
        separator: ``None`` splits on runs of spaces and tabs; otherwise the exact string (e.g.
            ``"\\t"``, which allows spaces inside a token). The tag field is stripped of whitespace.
        char_digit_tokens: Weibo NER form: the token is a character followed by the ASCII digits of its
            position in the segmenter's word (``科0``, ``p10``); those trailing digits are removed.
            When the character is itself a digit (``01``) the first character is kept.
        scheme: ``"iob1"``, ``"iob2"``, ``"bioes"``, ``"bmes"``, or ``"auto"`` to run
            :func:`detect_scheme` once over all tags of the file. See :func:`to_iob2`.

    Returns:
        The sentences in file order, tags converted to IOB2.

    Raises:
        DataError: file missing; NUL bytes; invalid UTF-8 (names the line); a carriage return inside a
            line (``\\r``-only line endings would glue lines together); a line with too few fields
            for ``token_column``/``tag_column``; an empty token or tag; with ``char_digit_tokens``, a
            token without trailing position digit; a tag not valid for the scheme; no sentence at all.
        ValueError: ``scheme`` or ``separator`` is not allowed (a programming error, not bad data).
    """
    if scheme != "auto" and scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)} or 'auto'")
    if separator is not None and (not separator or "\n" in separator):
        raise ValueError(f"separator must be None or a non-empty string without newline, got {separator!r}")
    path = Path(path)
    text = _decode(path)
    need = _required_columns(token_column, tag_column)
    sep_name = "spaces or tabs" if separator is None else repr(separator)

    raw: list[tuple[list[str], list[str], int]] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def close() -> None:
        nonlocal words, tags
        if words:
            raw.append((words, tags, first_line))
            words, tags = [], []

    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r").replace(_BOM, "")
        if "\r" in line:
            raise DataError(
                path,
                lineno,
                "carriage return inside the line (classic Mac OS line endings?); expected lines ending "
                "in \\n or \\r\\n, one token per line",
            )
        if not line.strip() or line.lstrip().startswith(_DOCSTART):
            close()
            continue
        fields = _WS_SPLIT.split(line.strip(" \t")) if separator is None else line.split(separator)
        n = len(fields)
        if n < need or (token_column % n) == (tag_column % n):
            raise DataError(
                path,
                lineno,
                f"found {n} column(s); expected at least {need} separated by {sep_name} "
                f"(token in column {token_column}, tag in column {tag_column})",
            )
        token, tag = fields[token_column], fields[tag_column].strip()
        if not token or not tag:
            raise DataError(
                path,
                lineno,
                f"empty {'token' if not token else 'tag'}; expected {need} non-empty "
                f"columns separated by {sep_name}",
            )
        if char_digit_tokens:
            stripped = _strip_position_digits(token)
            if stripped is None:
                raise DataError(
                    path,
                    lineno,
                    f"token {_show(token)} has no trailing position digit; expected a character "
                    "followed by its word-position digit(s), e.g. '科0' (char_digit_tokens=True)",
                )
            token = stripped
        if not words:
            first_line = lineno
        words.append(token)
        tags.append(tag)
    close()

    if not raw:
        raise DataError(
            path,
            None,
            "no sentences found (the file is empty or holds only -DOCSTART- and blank lines); "
            "expected lines 'token ... tag' with a blank line between sentences",
        )

    if scheme == "auto":
        scheme = detect_scheme(_tags_with_breaks(raw))
    sentences = []
    for words, tags, line in raw:
        try:
            iob2 = to_iob2(tags, scheme)
        except _TagError as err:
            raise DataError(path, line + err.index, str(err)) from None
        sentences.append(Sentence(words, iob2, line))
    return sentences


def _tags_with_breaks(raw: Iterable[tuple[list[str], list[str], int]]) -> Iterator[str]:
    for _, tags, _ in raw:
        yield from tags
        yield "O"


def write_conll(sentences: Iterable[Sentence], path: str | os.PathLike[str], separator: str = "\t") -> None:
    """Write sentences as a two-column ``token<separator>tag`` file, a blank line after each sentence.

    The file is written to a temporary file in the same folder and moved into place with
    :func:`os.replace`, so a reader never sees half a file. :func:`read_conll` reads it back unchanged
    (``separator=None`` works too when no token contains a space).

    Args:
        sentences: what to write.
        path: the output file; its folder must exist.
        separator: field separator.

    Raises:
        ValueError: a token or tag is empty, contains the separator or a line break, or a token is
            ``-DOCSTART-``; any of these would not read back as written.
    """
    if not separator or "\n" in separator or "\r" in separator:
        raise ValueError(f"separator must be a non-empty string without line breaks, got {separator!r}")
    path = Path(path)
    blocks: list[str] = []
    for s in sentences:
        lines = []
        for i, (word, tag) in enumerate(zip(s.words, s.tags, strict=True)):
            for what, value in (("token", word), ("tag", tag)):
                if not value or separator in value or "\n" in value or "\r" in value:
                    raise ValueError(
                        f"sentence at line {s.line}, token {i}: {what} {value!r} is empty or contains the "
                        f"separator {separator!r} or a line break"
                    )
            if word.startswith(_DOCSTART):
                raise ValueError(f"sentence at line {s.line}, token {i}: a token cannot be {_DOCSTART}")
            lines.append(f"{word}{separator}{tag}\n")
        blocks.append("".join(lines) + "\n")
    from experiments.reporting import write_text

    write_text(path, "".join(blocks))


def check_labels(
    sentences: Sequence[Sentence],
    label2id: Mapping[str, int],
    path: str | os.PathLike[str],
    *,
    unknown: str = "error",
) -> tuple[list[Sentence], int]:
    """Check that every tag is in the training label set (e.g. of a dev or test file).

    Args:
        sentences: as read by :func:`read_conll` from ``path``.
        label2id: the label set the model was built with.
        path: the file the sentences came from (for the message).
        unknown: ``"error"`` to reject an unseen tag; ``"O"`` to replace each unseen tag by ``O``
            (the caller should warn with the returned count).

    Returns:
        ``(sentences, replaced)``: the sentences (the same objects where nothing changed) and how many
        tags were replaced by ``O`` (always 0 with ``unknown="error"``).

    Raises:
        DataError: with ``unknown="error"``, for the first unseen tag; it names the file, the token's own
            line (``sentence.line`` + its position in the sentence) and the known labels.
        ValueError: ``unknown`` is neither ``"error"`` nor ``"O"``, or ``"O"`` is not in ``label2id``.
    """
    if unknown not in ("error", "O"):
        raise ValueError(f"unknown must be 'error' or 'O', got {unknown!r}")
    if unknown == "O" and "O" not in label2id:
        raise ValueError("unknown='O' needs 'O' in label2id")
    out: list[Sentence] = []
    replaced = 0
    for s in sentences:
        bad = [i for i, tag in enumerate(s.tags) if tag not in label2id]
        if not bad:
            out.append(s)
            continue
        if unknown == "error":
            i = bad[0]
            raise DataError(
                path,
                s.line + i,
                f"tag {_show(s.tags[i])} (token {_show(s.words[i])}) is not in the training label set; "
                "known labels: "
                f"{', '.join(label2id)}. Fix the tag, or map unseen tags to 'O' (unknown='O')",
            )
        replaced += len(bad)
        bad_set = set(bad)
        tags = ["O" if i in bad_set else tag for i, tag in enumerate(s.tags)]
        out.append(Sentence(list(s.words), tags, s.line, s.text, s.offsets, s.id))
    return out, replaced


def label_list(sentences: Iterable[Sentence]) -> list[str]:
    """The label set of IOB2 sentences: ``"O"`` first, then sorted by entity type, ``B-`` before ``I-``.

    ``"O"`` is always included, even if no token has it: unseen-tag replacement and words that get no
    sub-token both fall back to it.

    Returns:
        e.g. ``["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]``.
    """
    labels = {tag for s in sentences for tag in s.tags}
    labels.discard("O")

    def key(tag: str) -> tuple[str, int, str]:
        prefix, _, typ = tag.partition("-")
        return typ, {"B": 0, "I": 1}.get(prefix, 2), prefix

    return ["O", *sorted(labels, key=key)]
