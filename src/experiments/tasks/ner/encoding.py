"""Sub-token alignment of word-level NER labels, and word-aligned windows for long sentences.

A token-classification model sees sub-tokens, the data has words. Alignment follows the reference
``run_ner.py`` of Hugging Face transformers (examples/pytorch/token-classification): the word's label
goes on its FIRST sub-token; special tokens and the other pieces get -100 (ignored by the loss), or,
with ``label_all_tokens``, the ``I-`` form of the word's label (never a second ``B-``, which would
open a second entity).

Unlike ``run_ner.py``, which truncates, a sentence longer than ``max_length`` is split into windows of
whole words that overlap by about ``stride`` sub-tokens, so no word is lost. Every word is *owned* by
exactly one window, the one where it has the most context on both sides; predictions are read back
only at owned positions (``word_index``), which gives exactly one prediction per word.

Words that tokenize to no piece at all (a zero-width space, a lone U+FEFF) cannot be labelled or
predicted: they never appear in ``word_index``, and the caller fills their prediction with ``"O"``
(see :func:`gather_words`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "IGNORE_INDEX",
    "encode_sentence",
    "plan_windows",
    "assign_owners",
    "b_to_i_map",
    "gather_words",
]

#: Label of positions the loss ignores (``torch.nn.CrossEntropyLoss`` default ``ignore_index``).
IGNORE_INDEX = -100


def plan_windows(word_lengths: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Split a sentence into overlapping windows of whole words.

    Greedy: each window takes as many words as fit in ``budget`` sub-tokens; the next window starts
    far enough back that the two share the longest run of whole words with at most ``stride``
    sub-tokens (less if a word would straddle that limit, and never so much that the next window could
    not reach the first new word). A word longer than ``budget`` is put alone in its window (the caller
    truncates its pieces); windows next to it do not overlap it. Words of length 0 ride along freely.

    Args:
        word_lengths: sub-token count of each word.
        budget: sub-tokens a window may hold (``max_length`` minus the special tokens), at least 1.
        stride: wanted overlap in sub-tokens, at least 0; values above ``budget // 2`` are lowered to it
            so that every window still brings at least half a budget of new text.

    Returns:
        Half-open word ranges ``(start, end)``, in order, covering every word; ``[]`` for no words.

    Raises:
        ValueError: ``budget < 1`` or ``stride < 0``.
    """
    if budget < 1:
        raise ValueError(f"window budget must be at least 1 sub-token, got {budget}")
    if stride < 0:
        raise ValueError(f"stride must be >= 0, got {stride}")
    stride = min(stride, budget // 2)
    n = len(word_lengths)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, total = start, 0
        while end < n and total + word_lengths[end] <= budget:
            total += word_lengths[end]
            end += 1
        if end == start:  # one word longer than the budget: alone
            end = start + 1
        windows.append((start, end))
        if end >= n:
            break
        limit = min(stride, budget - word_lengths[end])  # negative when the next word is oversized
        nxt, overlap = end, 0
        while nxt - 1 > start and overlap + word_lengths[nxt - 1] <= limit:
            nxt -= 1
            overlap += word_lengths[nxt]
        start = nxt
    return windows


def assign_owners(windows: Sequence[tuple[int, int]], n_words: int) -> list[int]:
    """Give each word to the one window where it has the most context on both sides.

    A word ``i`` in window ``(a, b)`` has ``i - a`` words of context on the left and ``b - 1 - i`` on
    the right; a window edge that is also the sentence edge loses nothing, so it counts as unlimited.
    The owner maximises the smaller of the two; ties go to the earlier window.

    Args:
        windows: half-open word ranges, e.g. from :func:`plan_windows`.
        n_words: number of words in the sentence.

    Returns:
        For each word, the index of its owning window.

    Raises:
        ValueError: a word is in no window.
    """
    owners = [-1] * n_words
    best = [-1] * n_words
    for k, (a, b) in enumerate(windows):
        for i in range(a, b):
            left = i - a if a > 0 else n_words
            right = b - 1 - i if b < n_words else n_words
            score = min(left, right)
            if score > best[i]:
                best[i], owners[i] = score, k
    missing = [i for i, k in enumerate(owners) if k < 0]
    if missing:
        raise ValueError(f"words {missing[:10]} are in no window")
    return owners


def b_to_i_map(label2id: Mapping[str, int]) -> dict[int, int]:
    """Map each ``B-X`` label id to the ``I-X`` id, for ``label_all_tokens``.

    A ``B-X`` without an ``I-X`` in the label set (only one-word ``X`` entities in training) maps to
    :data:`IGNORE_INDEX`, so its continuation pieces are ignored instead of getting a second ``B-``.
    Ids absent from the map (``O``, ``I-``) keep their label.
    """
    return {
        idx: label2id.get("I-" + label[2:], IGNORE_INDEX)
        for label, idx in label2id.items()
        if label.startswith("B-")
    }


def _word_ids(encoding: Any) -> list[int | None]:
    try:
        return encoding.word_ids()
    except ValueError as err:  # a tokenizer without the Rust backend has no alignment information
        raise ValueError(
            f"encode_sentence needs a fast (tokenizers-backed) tokenizer for word alignment: {err}"
        ) from err


def encode_sentence(
    tokenizer: Any,
    words: Sequence[str],
    label_ids: Sequence[int] | None,
    *,
    max_length: int,
    stride: int = 32,
    label_all_tokens: bool = False,
    b_to_i: Mapping[int, int] | None = None,
) -> list[dict[str, list[int]]]:
    """Tokenize one pre-split sentence into one or more model inputs with aligned labels.

    Args:
        tokenizer: a fast Hugging Face tokenizer (``word_ids()`` must work).
        words: the sentence's words.
        label_ids: one label id per word, or ``None`` for prediction.
        max_length: most ids per window, special tokens included.
        stride: overlap between consecutive windows, in sub-tokens (see :func:`plan_windows`).
        label_all_tokens: label continuation pieces too, with the word label's ``I-`` form.
        b_to_i: ``B-X`` id -> ``I-X`` id (:func:`b_to_i_map`); required with ``label_all_tokens``.

    Returns:
        One dict per window, each list as long as ``input_ids`` (at most ``max_length``):
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes them), ``labels``
        (only when ``label_ids`` is given: every word of the window is labelled at its first piece,
        -100 on special tokens and, unless ``label_all_tokens``, on continuation pieces), and
        ``word_index``: the sentence-level word index at the first piece of each word this window
        owns, -1 everywhere else. Over all windows each word with at least one piece appears in
        ``word_index`` exactly once. A word longer than the window budget sits alone in its window
        with its pieces truncated; its first piece, which carries the label, is kept.

    Raises:
        ValueError: no words; ``label_ids`` of the wrong length; ``label_all_tokens`` without
            ``b_to_i``; ``max_length`` leaves no room beside the special tokens; a slow tokenizer.
    """
    words = list(words)
    n = len(words)
    if n == 0:
        raise ValueError("cannot encode an empty sentence")
    if label_ids is not None and len(label_ids) != n:
        raise ValueError(f"{n} words but {len(label_ids)} label ids")
    if label_all_tokens and label_ids is not None and b_to_i is None:
        raise ValueError("label_all_tokens=True needs b_to_i (see b_to_i_map) so no piece gets a second B-")
    budget = max_length - tokenizer.num_special_tokens_to_add()
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room beside the special tokens")

    full = tokenizer(words, is_split_into_words=True, truncation=False)
    full_ids = _word_ids(full)
    if len(full["input_ids"]) <= max_length:
        windows, encodings = [(0, n)], [full]
    else:
        lengths = [0] * n
        for w in full_ids:
            if w is not None:
                lengths[w] += 1
        windows = plan_windows(lengths, budget, stride)
        encodings = []
        for a, b in windows:
            if b - a == 1 and lengths[a] > budget:
                enc = tokenizer(words[a:b], is_split_into_words=True, truncation=True, max_length=max_length)
            else:
                enc = tokenizer(words[a:b], is_split_into_words=True, truncation=False)
            encodings.append(enc)
    owners = assign_owners(windows, n)

    features = []
    for k, ((a, _), enc) in enumerate(zip(windows, encodings, strict=True)):
        if len(enc["input_ids"]) > max_length:  # pieces in a window differ from pieces in the sentence
            raise RuntimeError(f"window {k} has {len(enc['input_ids'])} ids > max_length={max_length}")
        feature = {
            key: list(enc[key]) for key in ("input_ids", "attention_mask", "token_type_ids") if key in enc
        }
        word_index: list[int] = []
        labels: list[int] = []
        prev = None
        for w in _word_ids(enc):
            if w is None:
                word_index.append(-1)
                labels.append(IGNORE_INDEX)
                prev = None
                continue
            g = a + w
            first = w != prev
            prev = w
            word_index.append(g if first and owners[g] == k else -1)
            if label_ids is None:
                continue
            if first:
                labels.append(label_ids[g])
            elif label_all_tokens:
                labels.append(b_to_i.get(label_ids[g], label_ids[g]))  # type: ignore[union-attr]
            else:
                labels.append(IGNORE_INDEX)
        if label_ids is not None:
            feature["labels"] = labels
        feature["word_index"] = word_index
        features.append(feature)
    return features


def gather_words(
    features: Sequence[Mapping[str, Sequence[int]]], values: Sequence[Sequence[Any]], n_words: int, fill: Any
) -> list[Any]:
    """Collect one value per word from per-position values (e.g. predicted label ids) of each window.

    Args:
        features: the windows of one sentence, from :func:`encode_sentence`.
        values: for each window, one value per position (same length as its ``input_ids``).
        n_words: number of words in the sentence.
        fill: value for words that got no sub-token (use the id of ``"O"``).

    Returns:
        ``n_words`` values, each read at the first piece of the word in its owning window.
    """
    out = [fill] * n_words
    for feature, vals in zip(features, values, strict=True):
        for pos, w in enumerate(feature["word_index"]):
            if w >= 0:
                out[w] = vals[pos]
    return out
