"""Malformed inputs: every reader raises our ``DataError`` naming the file, the line and the expected form.

The corpus is ``tests/data/bad/`` (described, file by file, in its README.md); inputs too large to commit
(a 5 MB line, 100 000 nested brackets) are generated into ``tmp_path``. A library exception escaping a
reader (``KeyError``, ``UnicodeDecodeError``, ``csv.Error``, ``json.JSONDecodeError``, ``RecursionError``...)
fails these tests: the entry point turns only ``ExperimentsError`` into one readable line.

The last tests run ``python -m experiments`` on a few of these files and check the one-line message and
exit code 2, and that a bad validation or test file stops the run before any training (no checkpoint).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from experiments.errors import DataError
from experiments.tasks.classification.readers import (
    read_banking77,
    read_bitext,
    read_clinc150,
    read_fiqa,
    read_phrasebank,
    read_table,
)
from experiments.tasks.ner.conll import check_labels, read_conll
from experiments.tasks.ner.datamodule import looks_like_conll, read_plain_text

try:  # the recommendation task (MIND format) is newer than the rest
    from experiments.tasks.recommendation.mind import read_behaviors, read_news
except ImportError:  # pragma: no cover
    read_behaviors = read_news = None

BAD = Path(__file__).parent / "data" / "bad"
TRAIN_LABELS = {"O": 0, "B-PER": 1, "I-PER": 2}
MIND_NEWS_IDS = dict.fromkeys(["N1", "N2", "N3"])


def conll_against_train_labels(path: Path) -> Any:
    """A validation/test file checked against the training label set (as the NER datamodule does)."""
    return check_labels(read_conll(path), TRAIN_LABELS, path)


def behaviors_against_news(path: Path) -> Any:
    """behaviors.tsv checked against a news.tsv holding N1, N2, N3 (as ``read_split`` does)."""
    return read_behaviors(path, MIND_NEWS_IDS, "news.tsv")


tsv_conll = functools.partial(read_conll, separator="\t")

# file -> (reader call, expected line or row (None: the whole file), fragment of the message)
CASES: dict[str, tuple[Callable[[Path], Any], int | None, str]] = {
    # CoNLL column files (NER)
    "conll_truncated.txt": (read_conll, 8, "found 1 column(s); expected at least 2"),
    "conll_one_column_tab.tsv": (tsv_conll, 2, "found 1 column(s); expected at least 2 separated by '\\t'"),
    "conll_empty_tag.tsv": (tsv_conll, 2, "empty tag"),
    "conll_unknown_prefix.txt": (read_conll, 5, "tag 'X-PER' is not valid in the IOB2 scheme"),
    "conll_tag_without_type.txt": (read_conll, 1, "tag 'B-' is not valid"),
    "conll_bmes_with_iob_prefix.txt": (
        functools.partial(read_conll, scheme="bmes"), 2, "tag 'I-NAME' is not valid in the BMES scheme"
    ),
    "conll_unseen_test_tag.txt": (
        conll_against_train_labels, 4, "'B-GPE' (token 'paris') is not in the training"
    ),
    "conll_empty.txt": (read_conll, None, "no sentences found"),
    "conll_blank_lines_only.txt": (read_conll, None, "no sentences found"),
    "conll_docstart_only.txt": (read_conll, None, "no sentences found"),
    "conll_nul_bytes.txt": (read_conll, 3, "contains NUL bytes"),
    "conll_utf16.txt": (read_conll, 1, "contains NUL bytes"),
    "conll_latin1.txt": (read_conll, 2, "byte 0xfc at byte column 2 is not valid UTF-8"),
    "conll_random_bytes.bin": (read_conll, 1, "is not valid UTF-8"),
    "conll_cr_line_endings.txt": (read_conll, 1, "carriage return inside the line"),
    "conll_weibo_no_position_digit.txt": (
        functools.partial(read_conll, char_digit_tokens=True), 3, "token '大' has no trailing position digit"
    ),
    # plain-text predict files (NER)
    "plain_latin1.txt": (read_plain_text, 2, "not UTF-8 text"),
    "plain_blank_only.txt": (read_plain_text, None, "no sentences"),
    "plain_nul_bytes.txt": (read_plain_text, 2, "contains NUL bytes"),
    # Financial PhraseBank
    "phrasebank_no_at.txt": (read_phrasebank, 2, "no '@' in the line"),
    "phrasebank_unknown_label.txt": (read_phrasebank, 2, "label 'mixed' after the last '@'"),
    "phrasebank_empty_sentence.txt": (read_phrasebank, 2, "empty sentence before '@'"),
    "phrasebank_empty.txt": (read_phrasebank, None, "no examples"),
    "phrasebank_utf16.txt": (read_phrasebank, 1, "contains NUL bytes"),
    "phrasebank_cr_line_endings.txt": (read_phrasebank, 1, "carriage return inside the line"),
    # FiQA-2018 task 1
    "fiqa_truncated.json": (read_fiqa, 9, "invalid JSON (Unterminated string"),
    "fiqa_not_object.json": (read_fiqa, None, "expected a JSON object mapping id"),
    "fiqa_missing_sentence.json": (read_fiqa, None, "record '2': expected {'sentence': str"),
    "fiqa_missing_target.json": (read_fiqa, None, "record '7' info[0]: target None"),
    "fiqa_score_out_of_range.json": (read_fiqa, None, "sentiment_score '1.7'; expected a number from -1"),
    "fiqa_score_not_a_number.json": (read_fiqa, None, "sentiment_score 'high'; expected a number"),
    "fiqa_score_huge_integer.json": (read_fiqa, None, "(401 characters); expected a number from -1 to 1"),
    # CSV / TSV / JSON Lines / JSON tables
    "table_unterminated_quote.csv": (read_table, 3, "bad CSV quoting (unexpected end of data)"),
    "table_text_after_quote.csv": (read_table, 2, "bad CSV quoting (',' expected after '\"')"),
    "table_missing_column.csv": (read_table, 1, "no column 'text'; columns found: 'sentence', 'label'"),
    "table_wrong_field_count.csv": (read_table, 3, "3 fields; expected 2 as in the header"),
    "table_empty_text.csv": (read_table, 3, "empty text in 'text'"),
    "table_empty_label.csv": (read_table, 3, "empty label in 'label'"),
    "table_empty.csv": (read_table, None, "empty file; expected a header row"),
    "table_blank_header.csv": (read_table, 1, "empty header row"),
    "table_duplicate_id.csv": (
        functools.partial(read_table, id_column="id"), 4, "duplicate id 'a1' (first at 2)"
    ),
    "table_tab_in_field.tsv": (read_table, 3, "3 fields; expected 2 as in the header"),
    "table_unknown_extension.txt": (read_table, None, "cannot tell the format from the extension '.txt'"),
    "table_invalid_json.jsonl": (read_table, 2, "invalid JSON (Expecting value at column 26)"),
    "table_not_object.jsonl": (read_table, 3, "list on this line; expected a JSON object"),
    "table_missing_key.jsonl": (read_table, 2, "no key 'label'; keys found: 'text'"),
    "table_text_not_string.jsonl": (read_table, 2, "text in 'text' is 42; expected a string"),
    "table_label_list_single.jsonl": (read_table, 1, "a list in 'label'; expected one label"),
    "table_huge_integer.jsonl": (read_table, 2, "invalid JSON (Exceeds the limit (4300 digits)"),
    "table_array_non_object.json": (read_table, None, "record 2: int; expected a JSON object"),
    "banking77_wrong_columns.csv": (read_banking77, 1, "no column 'category'"),
    "bitext_unterminated_multiline.csv": (read_bitext, 2, "bad CSV quoting"),
    # CLINC150
    "clinc150_missing_split.json": (read_clinc150, None, "missing split(s) oos_test; keys found: 'train'"),
    "clinc150_bad_item.json": (
        read_clinc150, None, "split 'val' item 0: [\"book a hotel\"]; expected [text, intent]"
    ),
    "clinc150_oos_in_scope.json": (read_clinc150, None, "split 'train' item 0: intent 'oos'"),
    "clinc150_not_object.json": (read_clinc150, None, "expected a JSON object of splits"),
    "clinc150_split_not_list.json": (read_clinc150, None, "split 'oos_test' is dict; expected a list"),
    # MIND news recommendation (news.tsv, behaviors.tsv)
    "mind_news_duplicate_id.tsv": (read_news, 3, "duplicated news id 'N1' (first on line 1)"),
    "mind_news_too_few_columns.tsv": (read_news, 2, "2 tab-separated columns; expected 4 to 8"),
    "mind_behaviors_history_not_in_news.tsv": (
        behaviors_against_news, 2, "history news id 'N9' is not in news.tsv"
    ),
    "mind_behaviors_malformed_impression.tsv": (
        behaviors_against_news, 2, "malformed impression token 'N3-2'; expected <news_id>-1, <news_id>-0"
    ),
    "mind_behaviors_mixed_labels.tsv": (behaviors_against_news, 1, "the file mixes labelled (<news_id>-0/1)"),
    "mind_behaviors_wrong_columns.tsv": (behaviors_against_news, 2, "4 tab-separated columns; expected 5"),
}
if read_news is None:  # pragma: no cover
    CASES = {k: v for k, v in CASES.items() if not k.startswith("mind_")}

# Messages that name the problem but not yet the expected form (mind.py belongs to the recommendation task).
NO_EXPECTED_FORM = {
    "mind_news_duplicate_id.tsv", "mind_behaviors_history_not_in_news.tsv", "mind_behaviors_mixed_labels.tsv",
}


def check_data_error(
    call: Callable[[Path], Any], path: Path, line: int | None, fragment: str, expected_form: bool = True
) -> DataError:
    """``call(path)`` raises exactly our DataError, located at ``path:line``, with ``fragment`` and (unless
    ``expected_form`` is False) an 'expected ...' statement; returns it."""
    with pytest.raises(Exception) as info:  # noqa: B017 (any type: checked below)
        call(path)
    err = info.value
    assert type(err) is DataError, f"{type(err).__name__} escaped instead of DataError: {err}"
    assert err.path == str(path)
    assert err.line == line, f"line {err.line}, expected {line}: {err}"
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(err).startswith(where), str(err)
    assert fragment in err.message, err.message
    if expected_form:
        assert re.search(r"expected|known labels", err.message), f"no expected form: {err.message}"
    assert "\n" not in str(err) and len(str(err)) < 700 + len(str(path)), "message is not one short line"
    return err


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_raises_data_error(name):
    call, line, fragment = CASES[name]
    check_data_error(call, BAD / name, line, fragment, expected_form=name not in NO_EXPECTED_FORM)


def test_corpus_and_its_readme_agree():
    """Every corpus file has a case here and a README row with the same message fragment, and back."""
    files = {p.name for p in BAD.iterdir() if p.name != "README.md"}
    if read_news is None:  # pragma: no cover
        files = {f for f in files if not f.startswith("mind_")}
    assert files == set(CASES)
    assert len(files) >= 25
    rows = {}
    for line in (BAD / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([^`]+)` \|.*\| `(.+)` \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert set(rows) == set(CASES)
    for name, (_, _, fragment) in CASES.items():
        assert rows[name] == fragment, name
    assert max(p.stat().st_size for p in BAD.iterdir()) < 16_000, "keep committed bad files small"


# ------------------------------------------------------------------------------- generated inputs

HUGE = 5 * 1024 * 1024
DEEP = 100_000


def _generated() -> dict[str, tuple[str, bytes, Callable[[Path], Any], int | None, str]]:
    """id -> (file name, content, reader call, line, fragment) for inputs too large to commit."""
    good_jsonl = b'{"text": "hello", "label": "greet"}\n'
    return {
        "conll_huge_line": ("huge.conll", b"a" * HUGE, read_conll, 1, "found 1 column(s)"),
        "conll_huge_tag": ("huge_tag.conll", b"john B-PER\nparis " + b"X" * HUGE + b"\n", read_conll, 2,
                           "(5,242,880 characters) is not valid in the IOB2 scheme"),
        "phrasebank_huge_line": ("huge.txt", b"x" * HUGE + b"\n", read_phrasebank, 1, "no '@' in the line"),
        "phrasebank_huge_label": ("huge_label.txt", b"Sales rose@" + b"y" * HUGE + b"\n", read_phrasebank, 1,
                                  "characters) after the last '@'"),
        "csv_huge_field": ("huge.csv", b"text,label\n" + b"z" * HUGE + b",greet\n", read_table, 2,
                           "is longer than 131072 characters"),
        "csv_huge_open_quote": ("open.csv", b'text,label\nhi,greet\n"' + b"w," * (HUGE // 2) + b"\n",
                                read_table, 3, "is longer than 131072 characters"),
        "jsonl_deep_nesting": ("deep.jsonl", good_jsonl + b'{"text": "x", "label": ' + b"[" * DEEP + b"\n",
                               read_table, 2, "invalid JSON (nested too deeply to read)"),
        "json_array_deep_nesting": ("deep.json", b"[" * DEEP, read_table, None, "nested too deeply"),
        "fiqa_deep_nesting": ("deep_fiqa.json", b'{"1": ' + b"[" * DEEP, read_fiqa, None,
                              "nested too deeply"),
        "clinc_deep_nesting": ("deep_clinc.json", b"{" + b'"a":{' * DEEP, read_clinc150, None,
                               "nested too deeply"),
    }


@pytest.mark.parametrize("case", sorted(_generated()))
def test_generated_bad_input_raises_data_error(case, tmp_path):
    name, content, call, line, fragment = _generated()[case]
    path = tmp_path / name
    path.write_bytes(content)
    check_data_error(call, path, line, fragment)


READERS: dict[str, Callable[[Path], Any]] = {
    "read_conll": read_conll,
    "read_plain_text": read_plain_text,
    "read_phrasebank": read_phrasebank,
    "read_fiqa": read_fiqa,
    "read_table": functools.partial(read_table, format="csv"),
    "read_banking77": read_banking77,
    "read_bitext": read_bitext,
    "read_clinc150": read_clinc150,
    **({"read_news": read_news, "read_behaviors": read_behaviors} if read_news is not None else {}),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_file_and_directory_are_data_errors(reader, tmp_path):
    call = READERS[reader]
    check_data_error(call, tmp_path / "no_such_file.csv", None, "not found")
    if reader != "read_clinc150":  # a folder there means <folder>/data_full.json, which is missing
        check_data_error(call, tmp_path, None, "is a directory")


def test_looks_like_conll_never_raises_on_bad_files(tmp_path):
    """The predict-file sniffer answers False (the plain-text reader then reports the problem)."""
    assert looks_like_conll(tmp_path / "missing.txt") is False
    for name in ("conll_random_bytes.bin", "conll_utf16.txt", "plain_nul_bytes.txt", "conll_empty.txt"):
        assert isinstance(looks_like_conll(BAD / name), bool)


# ------------------------------------------------------------------------------------------- CLI

NER_TRAIN = "john B-PER\nsmith I-PER\nlives O\nin O\nparis B-LOC\n\napple B-ORG\nshares O\nrose O\n"
NER_TEST = "john B-PER\nworks O\n\nparis B-LOC\nrose O\n"


def cli(*overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m experiments <overrides>`` offline, its Hydra run dir under ``cwd``."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *overrides, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, location: str, fragment: str) -> str:
    """Exit code 2, no traceback, and exactly one ``error: <location>: ...`` line on stderr."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: {location}: "), lines[0]
    assert fragment in lines[0]
    assert proc.stderr.rstrip().endswith(lines[0])
    return lines[0]


@pytest.fixture
def ner_files(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    files = {"train": folder / "train.txt", "validation": folder / "valid.txt", "test": folder / "test.txt"}
    files["train"].write_text(NER_TRAIN)
    files["validation"].write_text(NER_TEST)
    files["test"].write_text(NER_TEST)
    return files


def ner_overrides(encoder: Path, files: dict[str, Path]) -> list[str]:
    return [
        "task=ner", f"model.name_or_path={encoder}", "trainer.precision=32", "debug=fast_dev_run",
        "data.batch_size=2", *(f"data.{k}_file={v}" for k, v in files.items()),
    ]


def test_cli_bad_training_tag_is_one_line_exit_2(tmp_path, tiny_encoder_dir, ner_files):
    bad = BAD / "conll_unknown_prefix.txt"
    proc = cli(*ner_overrides(tiny_encoder_dir, {**ner_files, "train": bad}), cwd=tmp_path)
    assert_one_line_error(proc, f"{bad}:5", "tag 'X-PER' is not valid in the IOB2 scheme; expected")


def test_cli_unseen_test_tag_stops_before_training(tmp_path, tiny_encoder_dir, ner_files):
    """A bad *test* file is found before the first training step: no checkpoint, no lost work."""
    bad = BAD / "conll_unseen_test_tag.txt"
    files = {**ner_files, "test": bad}
    overrides = ner_overrides(tiny_encoder_dir, files)
    overrides = [o for o in overrides if o != "debug=fast_dev_run"] + ["debug=limit"]
    proc = cli(*overrides, cwd=tmp_path)
    assert_one_line_error(proc, f"{bad}:4", "tag 'B-GPE' (token 'paris') is not in the training label set")
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.json").exists()


def test_cli_binary_predict_file_is_one_line_exit_2(tmp_path, tiny_encoder_dir):
    bad = BAD / "plain_nul_bytes.txt"
    proc = cli("task=ner", "mode=predict", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
               f"data.predict_file={bad}", "data.train_file=null", "data.validation_file=null",
               "data.test_file=null", cwd=tmp_path)
    assert_one_line_error(proc, f"{bad}:2", "contains NUL bytes")


def test_cli_bad_csv_for_text_classification_is_one_line_exit_2(tmp_path, tiny_encoder_dir):
    pytest.importorskip("experiments.tasks.classification.datamodule")
    bad = BAD / "table_unterminated_quote.csv"
    proc = cli("task=text_classification", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
               "debug=fast_dev_run", f"data.train_file={bad}", cwd=tmp_path)
    assert_one_line_error(proc, f"{bad}:3", "bad CSV quoting")
