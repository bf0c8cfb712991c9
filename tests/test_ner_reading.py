"""CoNLL reading, tag-scheme conversion and label checks, on small hand-written files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from experiments.errors import DataError
from experiments.tasks.ner.conll import (
    Sentence,
    check_labels,
    detect_scheme,
    label_list,
    read_conll,
    to_iob2,
    write_conll,
)

DATA_DIR = Path(
    os.environ.get("EXPERIMENTS_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def write(tmp_path: Path, content: str | bytes, name: str = "data.conll") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def as_tuples(sentences: list[Sentence]) -> list[tuple[list[str], list[str], int]]:
    return [(s.words, s.tags, s.line) for s in sentences]


# --------------------------------------------------------------------------------------------- reading


def test_conll2003_layout_docstart_multiple_blanks_and_no_trailing_blank(tmp_path):
    path = write(
        tmp_path,
        "-DOCSTART- -X- -X- O\n"  # 1
        "\n"  # 2
        "EU NNP B-NP B-ORG\n"  # 3
        "rejects VBZ B-VP O\n"  # 4
        "\n"  # 5
        "\n"  # 6
        "\n"  # 7
        "Peter NNP B-NP B-PER\n"  # 8
        "Blackburn NNP I-NP I-PER\n"  # 9
        "-DOCSTART- -X- -X- O\n"  # 10: also ends the sentence
        "BRUSSELS NNP B-NP B-LOC",  # 11, no newline at all at the end
    )
    assert as_tuples(read_conll(path)) == [
        (["EU", "rejects"], ["B-ORG", "O"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 8),
        (["BRUSSELS"], ["B-LOC"], 11),
    ]


def test_bom_at_start_glued_to_token_and_alone_on_last_line(tmp_path):
    # WNUT-17 dev: "Dubbz\ufeff\tB-person" and a last line holding only a BOM.
    path = write(tmp_path, "\ufeffStabilized\tO\napproach\tO\n\nDubbz\ufeff\tB-person\n!\tO\n\ufeff\n")
    assert as_tuples(read_conll(path, separator="\t")) == [
        (["Stabilized", "approach"], ["O", "O"], 1),
        (["Dubbz", "!"], ["B-person", "O"], 4),
    ]


def test_whitespace_separator_accepts_tabs_spaces_and_crlf(tmp_path):
    path = write(tmp_path, "New\tB-LOC\r\nYork   I-LOC  \r\n \t \r\nis \t O\r\n")
    assert as_tuples(read_conll(path)) == [(["New", "York"], ["B-LOC", "I-LOC"], 1), (["is"], ["O"], 4)]


def test_tab_separator_keeps_spaces_inside_tokens(tmp_path):
    path = write(tmp_path, "New York\tB-LOC\ncity\tO \n")
    assert as_tuples(read_conll(path, separator="\t")) == [(["New York", "city"], ["B-LOC", "O"], 1)]


def test_tab_separator_on_space_separated_line_is_too_few_columns(tmp_path):
    path = write(tmp_path, "a\tO\nb\tO\n\nc O\n")
    with pytest.raises(DataError) as info:
        read_conll(path, separator="\t")
    assert info.value.line == 4
    assert "found 1 column(s); expected at least 2" in str(info.value)
    assert str(path) in str(info.value)


def test_too_few_columns_names_line_and_expected_count(tmp_path):
    path = write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-MISC\n")
    with pytest.raises(DataError) as info:
        read_conll(path, token_column=0, tag_column=3)
    assert info.value.line == 4
    assert "found 3 column(s); expected at least 4" in info.value.message


def test_single_column_line_with_default_columns(tmp_path):
    path = write(tmp_path, "a O\n\n\nlonely\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 4
    assert "expected at least 2" in info.value.message


@pytest.mark.parametrize(
    "content", ["", "\n\n\n", "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n", "\ufeff\n"]
)
def test_no_sentences(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line is None
    assert "no sentences" in info.value.message


def test_nul_bytes_are_rejected_with_line(tmp_path):
    path = write(tmp_path, b"a O\nb O\n\x00\x01\x02garbage\xff\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 3
    assert "NUL" in info.value.message and "UTF-8" in info.value.message


def test_latin1_bytes_are_rejected_with_line(tmp_path):
    path = write(tmp_path, "Zürich B-LOC\n\nSão O\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 1
    assert "0xfc" in info.value.message and "UTF-8" in info.value.message


def test_latin1_byte_on_later_line(tmp_path):
    path = write(tmp_path, "a O\n\nb O\nS\xe3o O\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 4


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as info:
        read_conll(tmp_path / "nope.conll")
    assert "not found" in info.value.message


def test_char_digit_tokens(tmp_path):
    # Weibo: character + its position digit(s) in the jieba word; p10 = "p" at position 10;
    # 01 = the digit "0" at position 1.
    path = write(tmp_path, "科0\tB-ORG.NAM\n技1\tI-ORG.NAM\np10\tO\n01\tO\n·0\tO\n")
    assert as_tuples(read_conll(path, separator="\t", char_digit_tokens=True)) == [
        (["科", "技", "p", "0", "·"], ["B-ORG.NAM", "I-ORG.NAM", "O", "O", "O"], 1)
    ]


@pytest.mark.parametrize("token", ["科", "0"])
def test_char_digit_tokens_without_digit(tmp_path, token):
    path = write(tmp_path, f"科0\tO\n\n{token}\tO\n")
    with pytest.raises(DataError) as info:
        read_conll(path, char_digit_tokens=True)
    assert info.value.line == 3
    assert "position digit" in info.value.message


def test_without_char_digit_the_digit_stays(tmp_path):
    path = write(tmp_path, "科0\tO\n")
    assert read_conll(path)[0].words == ["科0"]


@pytest.mark.parametrize(
    ("tag", "scheme"),
    [
        ("B_PER", "iob2"),
        ("PER", "auto"),
        ("X-PER", "auto"),
        ("B-", "iob2"),
        ("M-PER", "iob2"),
        ("I-PER", "bmes"),
    ],
)
def test_invalid_tag_names_file_and_line(tmp_path, tag, scheme):
    path = write(tmp_path, f"a O\n\nb O\nc {tag}\n")
    with pytest.raises(DataError) as info:
        read_conll(path, scheme=scheme)
    assert info.value.line == 4
    assert repr(tag) in info.value.message and "expected 'O'" in info.value.message
    assert info.value.path == str(path)


def test_auto_scheme_is_detected_once_per_file(tmp_path):
    # The first sentence alone looks like IOB2, but the file has S-/E- tags: BIOES for all sentences.
    path = write(tmp_path, "a B-PER\nb I-PER\nc E-PER\n\nd S-LOC\ne O\n")
    assert as_tuples(read_conll(path)) == [
        (["a", "b", "c"], ["B-PER", "I-PER", "I-PER"], 1),
        (["d", "e"], ["B-LOC", "O"], 5),
    ]


def test_bmes_file(tmp_path):
    path = write(
        tmp_path, "高 B-NAME\n勇 E-NAME\n： O\n男 S-RACE\n\n中 B-ORG\n国 M-ORG\n银 M-ORG\n行 E-ORG\n"
    )
    assert as_tuples(read_conll(path)) == [
        (["高", "勇", "：", "男"], ["B-NAME", "I-NAME", "O", "B-RACE"], 1),
        (["中", "国", "银", "行"], ["B-ORG", "I-ORG", "I-ORG", "I-ORG"], 6),
    ]


def test_iob1_file(tmp_path):
    path = write(tmp_path, "U.N. I-ORG\nofficial O\nEkeus I-PER\nB-PER B-PER\n")
    # auto: I- starts entities, B- only between two same-type entities -> IOB1
    assert read_conll(path)[0].tags == ["B-ORG", "O", "B-PER", "B-PER"]


# ------------------------------------------------------------------------------------- tag schemes


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),
        (["I-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),
        (["O", "B-ORG", "I-ORG"], ["O", "B-ORG", "I-ORG"]),
    ],
)
def test_iob1_to_iob2(tags, expected):
    assert to_iob2(tags, "iob1") == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "E-PER", "O", "S-LOC"], ["B-PER", "I-PER", "I-PER", "O", "B-LOC"]),
        (["S-LOC", "S-LOC"], ["B-LOC", "B-LOC"]),
        (["B-ORG", "E-ORG", "B-ORG", "E-ORG"], ["B-ORG", "I-ORG", "B-ORG", "I-ORG"]),
        # BILOU spelling
        (["B-PER", "L-PER", "U-LOC", "O"], ["B-PER", "I-PER", "B-LOC", "O"]),
        # E- closes the entity: a following I- of the same type starts a new one
        (["B-PER", "E-PER", "I-PER"], ["B-PER", "I-PER", "B-PER"]),
    ],
)
def test_bioes_to_iob2(tags, expected):
    assert to_iob2(tags, "bioes") == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-ORG", "M-ORG", "M-ORG", "E-ORG"], ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]),
        (["S-NAME", "O", "B-EDU", "E-EDU"], ["B-NAME", "O", "B-EDU", "I-EDU"]),
        (["S-RACE", "S-RACE"], ["B-RACE", "B-RACE"]),
    ],
)
def test_bmes_to_iob2(tags, expected):
    assert to_iob2(tags, "bmes") == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),
        (["I-PER", "I-PER"], ["B-PER", "I-PER"]),  # sentence starts inside an entity
        (["O", "I-LOC"], ["O", "B-LOC"]),  # I- after O
        (["B-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),  # I- after another type
        (["B-creative-work", "I-creative-work"], ["B-creative-work", "I-creative-work"]),  # type with "-"
    ],
)
def test_iob2_violations_are_repaired(tags, expected):
    assert to_iob2(tags, "iob2") == expected


def test_to_iob2_rejects_unknown_prefix_and_scheme():
    with pytest.raises(ValueError, match="'E-PER'"):
        to_iob2(["B-PER", "E-PER"], "iob2")
    with pytest.raises(ValueError, match="unknown tag scheme"):
        to_iob2(["O"], "bilou2")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-ORG", "M-ORG", "E-ORG", "S-PER"], "bmes"),
        (["B-ORG", "E-ORG", "S-PER"], "bioes"),
        (["U-PER", "O", "B-LOC", "L-LOC"], "bioes"),
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "iob1"),
        (["B-PER", "I-PER", "O", "B-LOC"], "iob2"),
        (["I-PER", "O", "B-LOC"], "iob2"),  # B- opening an entity after O: not IOB1
        (["O", "O"], "iob2"),
        ([], "iob2"),
    ],
)
def test_detect_scheme(tags, expected):
    assert detect_scheme(tags) == expected


def test_detect_scheme_takes_a_generator():
    assert detect_scheme(t for t in ["I-PER", "O"]) == "iob1"


# ------------------------------------------------------------------------------- writing and labels


def test_write_read_round_trip(tmp_path):
    sentences = [
        Sentence(["New York", "is", "big"], ["B-LOC", "O", "O"], 1),
        Sentence(["科", "p"], ["B-ORG.NAM", "I-ORG.NAM"], 5),
    ]
    path = tmp_path / "out.conll"
    write_conll(sentences, path)
    assert (
        path.read_text(encoding="utf-8")
        == "New York\tB-LOC\nis\tO\nbig\tO\n\n科\tB-ORG.NAM\np\tI-ORG.NAM\n\n"
    )
    back = read_conll(path, separator="\t", scheme="iob2")
    assert as_tuples(back) == [
        (["New York", "is", "big"], ["B-LOC", "O", "O"], 1),
        (["科", "p"], ["B-ORG.NAM", "I-ORG.NAM"], 5),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.conll"]  # no temp file left


def test_write_rejects_tokens_that_would_not_read_back(tmp_path):
    with pytest.raises(ValueError, match="separator"):
        write_conll([Sentence(["a\tb"], ["O"], 1)], tmp_path / "x.conll")
    assert not (tmp_path / "x.conll").exists()


def test_sentence_lengths_must_match():
    with pytest.raises(ValueError):
        Sentence(["a", "b"], ["O"], 1)


LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


def test_check_labels_unknown_error_names_the_tokens_own_line(tmp_path):
    path = write(tmp_path, "a B-PER\n\n\nb O\nc O\nd B-MISC\ne I-MISC\n")
    sentences = read_conll(path)
    assert sentences[1].line == 4
    with pytest.raises(DataError) as info:
        check_labels(sentences, LABEL2ID, path)
    assert info.value.line == 6  # "d B-MISC": line 4 + offset 2
    assert "'B-MISC'" in info.value.message and "'d'" in info.value.message
    assert "O, B-PER, I-PER, B-LOC, I-LOC" in info.value.message


def test_check_labels_unknown_to_o_counts(tmp_path):
    path = write(tmp_path, "a B-PER\n\nb O\nd B-MISC\ne I-MISC\nf B-LOC\n")
    sentences = read_conll(path)
    out, replaced = check_labels(sentences, LABEL2ID, path, unknown="O")
    assert replaced == 2
    assert [s.tags for s in out] == [["B-PER"], ["O", "O", "O", "B-LOC"]]
    assert out[0] is sentences[0]
    assert sentences[1].tags == ["O", "B-MISC", "I-MISC", "B-LOC"]  # input not modified


def test_check_labels_all_known():
    sentences = [Sentence(["a"], ["B-LOC"], 1)]
    assert check_labels(sentences, LABEL2ID, "x") == (sentences, 0)


def test_label_list_order():
    sentences = [
        Sentence(["a", "b", "c"], ["I-PER", "B-PER", "O"], 1),
        Sentence(["d", "e"], ["B-LOC", "I-LOC"], 5),
        Sentence(["f"], ["B-MISC"], 8),
    ]
    assert label_list(sentences) == ["O", "B-LOC", "I-LOC", "B-MISC", "B-PER", "I-PER"]
    assert label_list([Sentence(["a"], ["B-X"], 1)]) == ["O", "B-X"]


# ---------------------------------------------------------------------------------- real data (smoke)

needs_data = pytest.mark.skipif(not (DATA_DIR / "ner").is_dir(), reason=f"no shared data at {DATA_DIR}")


@pytest.mark.smoke
@needs_data
def test_real_conll2003_train():
    sentences = read_conll(DATA_DIR / "ner" / "conll2003" / "train.txt")
    assert len(sentences) == 14041
    assert sum(len(s.words) for s in sentences) == 203621
    assert label_list(sentences) == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]


@pytest.mark.smoke
@needs_data
def test_real_wnut17_dev_with_bom():
    sentences = read_conll(DATA_DIR / "ner" / "wnut17" / "emerging.dev.conll", separator="\t")
    assert len(sentences) == 1009
    # 15,733 token lines; the 16,742nd line holds only a BOM (MANIFEST counts 15,734)
    assert sum(len(s.words) for s in sentences) == 15733
    assert not any("\ufeff" in w for s in sentences for w in s.words)
    assert len(label_list(sentences)) == 13


@pytest.mark.smoke
@needs_data
def test_real_weibo_train():
    sentences = read_conll(
        DATA_DIR / "ner" / "weibo_ner" / "weiboNER_2nd_conll.train", separator="\t", char_digit_tokens=True
    )
    assert len(sentences) == 1350
    assert sum(len(s.words) for s in sentences) == 73778
    labels = label_list(sentences)
    assert len(labels) == 17 and labels[0] == "O" and "B-PER.NAM" in labels and "I-GPE.NOM" in labels
    assert sentences[0].words[:2] == ["科", "技"]


@pytest.mark.smoke
@needs_data
def test_real_resume_train_bmes():
    sentences = read_conll(DATA_DIR / "ner" / "resume_ner" / "train.char.bmes")
    assert len(sentences) == 3821
    assert sum(len(s.words) for s in sentences) == 124099
    labels = label_list(sentences)
    assert len(labels) == 17  # 8 types x B/I + O
    assert not any(t[0] in "MES" for t in labels if t != "O")
