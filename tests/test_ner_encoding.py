"""Sub-token label alignment and word-aligned windows, with the tiny BERT tokenizer."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from experiments.tasks.ner.encoding import (
    assign_owners,
    b_to_i_map,
    encode_sentence,
    gather_words,
    plan_windows,
)

DATA_DIR = Path(
    os.environ.get("EXPERIMENTS_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)

LABEL2ID = {"O": 0, "B-ORG": 1, "I-ORG": 2}
O, B, I = 0, 1, 2  # noqa: E741


def real_ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids, f"{tokens} are not all in the tiny vocab"
    return ids


# no whole word of the tiny vocab is made of these letters only, so every letter is one piece
CONSONANTS = "bcdfghjklmnpqrstvwxz"


def random_words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(CONSONANTS) for _ in range(rng.randint(1, 6))) for _ in range(n)]


# ------------------------------------------------------------------------------------ alignment


def test_two_words_two_pieces_each_first_piece_only(tiny_tokenizer):
    (feature,) = encode_sentence(tiny_tokenizer, ["ab", "cd"], [B, I], max_length=16)
    # [CLS] a ##b c ##d [SEP]: each word splits into two letters
    assert feature["input_ids"] == real_ids(tiny_tokenizer, ["[CLS]", "a", "##b", "c", "##d", "[SEP]"])
    assert feature["attention_mask"] == [1] * 6
    assert feature["token_type_ids"] == [0] * 6
    assert feature["labels"] == [-100, B, -100, I, -100, -100]
    assert feature["word_index"] == [-1, 0, -1, 1, -1, -1]


def test_two_words_two_pieces_each_label_all_tokens(tiny_tokenizer):
    b_to_i = b_to_i_map(LABEL2ID)
    assert b_to_i == {B: I}
    (feature,) = encode_sentence(
        tiny_tokenizer, ["ab", "cd"], [B, I], max_length=16, label_all_tokens=True, b_to_i=b_to_i
    )
    assert feature["input_ids"] == real_ids(tiny_tokenizer, ["[CLS]", "a", "##b", "c", "##d", "[SEP]"])
    assert feature["labels"] == [-100, B, I, I, I, -100]  # "##b" gets I-ORG, never a second B-ORG


def test_whole_vocab_words_and_o_continuation(tiny_tokenizer):
    # "bank" is one piece; "xy" is x ##y; O stays O on continuations
    (feature,) = encode_sentence(
        tiny_tokenizer,
        ["bank", "xy"],
        [B, O],
        max_length=16,
        label_all_tokens=True,
        b_to_i=b_to_i_map(LABEL2ID),
    )
    assert feature["input_ids"] == real_ids(tiny_tokenizer, ["[CLS]", "bank", "x", "##y", "[SEP]"])
    assert feature["labels"] == [-100, B, O, O, -100]


def test_prediction_mode_has_no_labels(tiny_tokenizer):
    (feature,) = encode_sentence(tiny_tokenizer, ["ab", "cd"], None, max_length=16)
    assert "labels" not in feature
    assert feature["word_index"] == [-1, 0, -1, 1, -1, -1]


def test_b_to_i_map_without_i_label_ignores_continuations():
    assert b_to_i_map({"O": 0, "B-X": 1, "B-Y": 2, "I-Y": 3}) == {1: -100, 2: 3}


def test_label_all_tokens_needs_b_to_i(tiny_tokenizer):
    with pytest.raises(ValueError, match="b_to_i"):
        encode_sentence(tiny_tokenizer, ["ab"], [B], max_length=16, label_all_tokens=True)


def test_bad_arguments(tiny_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        encode_sentence(tiny_tokenizer, [], None, max_length=16)
    with pytest.raises(ValueError, match="label ids"):
        encode_sentence(tiny_tokenizer, ["ab", "cd"], [B], max_length=16)
    with pytest.raises(ValueError, match="no room"):
        encode_sentence(tiny_tokenizer, ["ab"], None, max_length=2)


def test_zero_piece_word_gets_no_position(tiny_tokenizer):
    words = ["ab", "\u200b", "cd"]  # a zero-width space tokenizes to nothing
    (feature,) = encode_sentence(tiny_tokenizer, words, [B, I, I], max_length=16)
    assert feature["input_ids"] == real_ids(tiny_tokenizer, ["[CLS]", "a", "##b", "c", "##d", "[SEP]"])
    assert feature["word_index"] == [-1, 0, -1, 2, -1, -1]
    assert feature["labels"] == [-100, B, -100, I, -100, -100]
    preds = [[9, 7, 9, 8, 9, 9]]
    assert gather_words([feature], preds, 3, fill=O) == [7, O, 8]


# -------------------------------------------------------------------------------------- windows


def test_plan_windows_hand_worked():
    # budget 4, stride 2, one piece per word: windows advance by 2 words
    windows = plan_windows([1] * 10, budget=4, stride=2)
    assert windows == [(0, 4), (2, 6), (4, 8), (6, 10)]
    # word 2: window 0 has unlimited left context (sentence start) and 1 word on the right, window 1 has
    # 0 on the left -> window 0; word 3: 0 on the right in window 0, min(1, 2) in window 1 -> window 1
    assert assign_owners(windows, 10) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_plan_windows_uneven_words():
    # lengths 3,3,2,2,3, budget 6, stride 3. Window (0,2) holds 6 pieces. The overlap may hold at most
    # min(3, 6 - len(word 2)) = 3 pieces: word 1 -> (1,3) = 5 pieces (word 3 would make 7). Overlap word 2
    # (2 <= 3; adding word 1 would make 5) -> (2,4) = 4 (word 4 would make 7). Overlap word 3 -> (3,5) = 5.
    assert plan_windows([3, 3, 2, 2, 3], budget=6, stride=3) == [(0, 2), (1, 3), (2, 4), (3, 5)]


def test_plan_windows_oversized_and_empty_words():
    assert plan_windows([2, 10, 2], budget=6, stride=2) == [(0, 1), (1, 2), (2, 3)]
    assert plan_windows([1, 0, 1], budget=2, stride=1) == [(0, 3)]
    assert plan_windows([], budget=4, stride=2) == []


def test_plan_windows_stride_is_capped_at_half_the_budget():
    assert plan_windows([1] * 6, budget=2, stride=5) == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]


def test_plan_windows_rejects_bad_budget_and_stride():
    with pytest.raises(ValueError):
        plan_windows([1], budget=0, stride=0)
    with pytest.raises(ValueError):
        plan_windows([1], budget=4, stride=-1)


def test_assign_owners_rejects_uncovered_words():
    with pytest.raises(ValueError, match=r"\[2\]"):
        assign_owners([(0, 2)], 3)


def check_windows(tokenizer, words, features, max_length):
    """Each window fits, and every word with pieces is owned by exactly one window."""
    owned = [w for f in features for w in f["word_index"] if w >= 0]
    assert sorted(owned) == list(range(len(words)))
    for f in features:
        assert len(f["input_ids"]) <= max_length
        assert len(f["attention_mask"]) == len(f["input_ids"]) == len(f["word_index"])
        assert f["input_ids"][0] == tokenizer.cls_token_id and f["input_ids"][-1] == tokenizer.sep_token_id


def test_600_word_sentence_loses_no_word(tiny_tokenizer):
    words = random_words(600)
    labels = [random.Random(i).choice([O, B, I]) for i in range(600)]
    features = encode_sentence(tiny_tokenizer, words, labels, max_length=64)
    assert len(features) > 1
    check_windows(tiny_tokenizer, words, features, 64)

    # the same windows as planned from the piece counts; consecutive ones share words
    lengths = [len(tiny_tokenizer.tokenize(w)) for w in words]
    assert all(n == len(w) for n, w in zip(lengths, words, strict=True))  # tiny vocab: one piece per letter
    windows = plan_windows(lengths, budget=62, stride=32)
    assert len(windows) == len(features)
    assert windows[0][0] == 0 and windows[-1][1] == 600
    for (a0, b0), (a1, b1) in zip(windows, windows[1:], strict=False):
        assert a0 < a1 < b0 < b1  # overlap, and progress
        assert 0 < sum(lengths[a1:b0]) <= 31  # stride capped at budget // 2
    for (a, b), f in zip(windows, features, strict=True):
        assert all(a <= w < b for w in f["word_index"] if w >= 0)
        # window k holds exactly its words: number of first pieces == b - a
        assert sum(label != -100 for label in f["labels"]) == b - a
        for pos, w in enumerate(f["word_index"]):
            if w >= 0:
                assert f["labels"][pos] == labels[w]
                assert tiny_tokenizer.convert_ids_to_tokens(f["input_ids"][pos]) == words[w][0]

    assert gather_words(features, [f["word_index"] for f in features], 600, fill=-1) == list(range(600))


def test_word_longer_than_budget(tiny_tokenizer):
    long_word = "abcdefghij" * 2  # 20 pieces; max_length 8 leaves 6
    features = encode_sentence(tiny_tokenizer, ["ab", long_word, "cd"], [B, I, O], max_length=8, stride=2)
    assert [f["input_ids"] for f in features] == [
        real_ids(tiny_tokenizer, ["[CLS]", "a", "##b", "[SEP]"]),
        real_ids(tiny_tokenizer, ["[CLS]", "a", "##b", "##c", "##d", "##e", "##f", "[SEP]"]),
        real_ids(tiny_tokenizer, ["[CLS]", "c", "##d", "[SEP]"]),
    ]
    assert [f["labels"] for f in features] == [
        [-100, B, -100, -100],
        [-100, I, -100, -100, -100, -100, -100, -100],
        [-100, O, -100, -100],
    ]
    assert [f["word_index"] for f in features] == [
        [-1, 0, -1, -1],
        [-1, 1, -1, -1, -1, -1, -1, -1],
        [-1, 2, -1, -1],
    ]


def test_long_word_label_all_tokens_in_window(tiny_tokenizer):
    features = encode_sentence(
        tiny_tokenizer, ["abcdefghij"], [B], max_length=6, label_all_tokens=True, b_to_i=b_to_i_map(LABEL2ID)
    )
    assert [f["labels"] for f in features] == [[-100, B, I, I, I, -100]]


@pytest.mark.smoke
@pytest.mark.skipif(not (DATA_DIR / "ner").is_dir(), reason=f"no shared data at {DATA_DIR}")
def test_real_long_sentence_windows_reconstruct_all_words(tiny_tokenizer):
    from experiments.tasks.ner.conll import read_conll

    sentences = read_conll(DATA_DIR / "ner" / "conll2003" / "valid.txt")
    words = max(sentences, key=lambda s: len(s.words)).words
    assert len(words) > 100
    full = tiny_tokenizer(words, is_split_into_words=True)
    pieces: list[list[int]] = [[] for _ in words]
    for token_id, w in zip(full["input_ids"], full.word_ids(), strict=True):
        if w is not None:
            pieces[w].append(token_id)
    assert all(pieces)  # the tiny vocab gives every word at least one piece ([UNK] at worst)

    features = encode_sentence(tiny_tokenizer, words, None, max_length=32, stride=8)
    assert len(features) > 3
    check_windows(tiny_tokenizer, words, features, 32)
    rebuilt: list[list[int]] = [[] for _ in words]
    for f in features:
        for pos, w in enumerate(f["word_index"]):
            if w >= 0:
                rebuilt[w] = f["input_ids"][pos : pos + len(pieces[w])]
    assert rebuilt == pieces
    assert [t for p in rebuilt for t in p] == full["input_ids"][1:-1]
