"""Word-level tags from word-level scores: argmax, or Viterbi under IOB2's allowed transitions.

Why Viterbi: a per-word argmax can emit ``I-X`` after ``O`` or after another type, which IOB2 does not
allow. conlleval reads such a tag as the start of a (usually wrong) entity and strict IOB2 scoring drops
it, so the two protocols disagree on argmax output (``tasks.ner.metrics``). Constrained decoding picks
the tag sequence with the highest total log-probability among the valid IOB2 sequences: ``I-X`` only
after ``B-X`` or ``I-X``, never first. This is the constrained Viterbi decoding of CRF taggers
(Lample et al. 2016) applied to a softmax tagger's independent word scores, with transition scores 0
(allowed) or -inf (forbidden), as AllenNLP's ``allowed_transitions`` does for BIO.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DECODERS = ("viterbi", "argmax")


def allowed_transitions(labels: Sequence[str]) -> tuple[Tensor, Tensor]:
    """IOB2 constraints as boolean masks: ``start[j]`` (tag j may open a sentence) and ``trans[i, j]``
    (tag j may follow tag i). ``I-X`` may follow only ``B-X`` and ``I-X``; every other tag is free.

    Returns:
        ``start`` of shape ``[L]`` and ``trans`` of shape ``[L, L]``, L = ``len(labels)``.
    """
    n = len(labels)
    start = torch.ones(n, dtype=torch.bool)
    trans = torch.ones(n, n, dtype=torch.bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            typ = tag[2:]
            start[j] = False
            trans[:, j] = torch.tensor([prev in (f"B-{typ}", f"I-{typ}") for prev in labels])
    return start, trans


def viterbi(scores: Tensor, lengths: Sequence[int], start: Tensor, trans: Tensor) -> list[list[int]]:
    """Best allowed tag sequence of each sentence.

    Args:
        scores: ``[S, T, L]`` word log-probabilities (any finite scores), sentences padded to T words.
        lengths: the number of real words of each of the S sentences.
        start, trans: from :func:`allowed_transitions`.

    Returns:
        S lists of tag ids, each as long as its sentence; ties go to the lower tag id.
    """
    s_count, t_max, n = scores.shape
    if s_count == 0 or t_max == 0:
        return [[] for _ in range(s_count)]
    neg = torch.tensor(float("-inf"), dtype=scores.dtype)
    trans_score = torch.where(trans, torch.zeros((), dtype=scores.dtype), neg)  # [L, L]
    lengths_t = torch.as_tensor(list(lengths), dtype=torch.long)
    best = torch.where(start, scores[:, 0], neg)  # [S, L]
    back = torch.zeros(s_count, t_max, n, dtype=torch.long)
    for t in range(1, t_max):
        cand = best[:, :, None] + trans_score[None]  # [S, prev, next]
        value, arg = cand.max(dim=1)
        step = value + scores[:, t]
        live = (lengths_t > t)[:, None]
        best = torch.where(live, step, best)
        back[:, t] = torch.where(live, arg, torch.arange(n).expand(s_count, n))
    out = []
    last = best.argmax(dim=-1).tolist()
    for i, length in enumerate(lengths_t.tolist()):
        if length == 0:
            out.append([])
            continue
        tags = [last[i]]
        for t in range(length - 1, 0, -1):
            tags.append(int(back[i, t, tags[-1]]))
        out.append(tags[::-1])
    return out


def decode_words(
    word_scores: Sequence[Tensor | None], labels: Sequence[str], method: str = "viterbi"
) -> list[list[str]]:
    """Tags of each sentence from its ``[n_words, L]`` log-probabilities.

    A row of NaN marks a word that got no prediction (the tokenizer dropped it): it is tagged ``O``
    (forced to ``O`` inside Viterbi, so the tags around it stay valid IOB2).

    Raises:
        ValueError: an unknown ``method``.
    """
    if method not in DECODERS:
        raise ValueError(f"module.decode must be one of {', '.join(DECODERS)}, got {method!r}")
    labels = list(labels)
    o = labels.index("O") if "O" in labels else None
    filled = []
    for s in word_scores:
        s = s.float().clone()
        missing = torch.isnan(s).any(dim=-1)
        if bool(missing.any()):
            s[missing] = 0.0 if o is None else float("-inf")
            if o is not None:
                s[missing, o] = 0.0
        filled.append(s)
    if method == "argmax":
        return [[labels[i] for i in s.argmax(dim=-1).tolist()] for s in filled]
    lengths = [len(s) for s in filled]
    t_max = max(lengths, default=0)
    padded = torch.zeros(len(filled), t_max, len(labels))
    for i, s in enumerate(filled):
        padded[i, : len(s)] = s
    start, trans = allowed_transitions(labels)
    ids = viterbi(padded, lengths, start, trans)
    return [[labels[i] for i in seq] for seq in ids]


def is_valid_iob2(tags: Sequence[str]) -> bool:
    """True when every ``I-X`` follows ``B-X`` or ``I-X`` (IOB2, Ramshaw & Marcus 1995 / Tjong Kim Sang 2000)."""
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev not in (f"B-{tag[2:]}", tag):
            return False
        prev = tag
    return True


def entity_records(words: Sequence[str], tags: Sequence[str], confidences: Sequence[float] | None = None, *,
                   text: str | None = None, offsets: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """The entities of one tagged sentence, for ``predictions.jsonl``.

    Each: ``text``, ``type``, ``start``/``end`` (word offsets, end exclusive), ``start_char``/``end_char``
    (end exclusive) and ``confidence`` (the mean probability of the entity's tags, when ``confidences``
    holds one per word). With ``text`` and ``offsets`` (one ``(start, end)`` per word, from a span file)
    the character offsets are those of the original text and ``text`` is its slice; otherwise they are
    offsets in the words joined by single spaces. Chunks are read as conlleval reads them.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    if offsets is None or text is None:
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
        text = " ".join(words)
    out = []
    for typ, a, b in get_entities(list(tags)):
        start, end = offsets[a][0], offsets[b][1]
        rec = {"text": text[start:end], "type": typ, "start": a, "end": b + 1, "start_char": start, "end_char": end}
        if confidences is not None:
            rec["confidence"] = round(float(sum(confidences[a:b + 1]) / (b + 1 - a)), 6)
        out.append(rec)
    return out
