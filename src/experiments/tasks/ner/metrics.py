"""Entity-level scores for NER under the two protocols in use, from seqeval's entity extraction.

Why two protocols: published CoNLL-2003 results (Tjong Kim Sang & De Meulder 2003; Devlin et al. 2019)
are scored with the CoNLL ``conlleval`` script, which reads an entity wherever a chunk starts, also
from an ``I-X`` that follows ``O`` or another type. seqeval's default mode does exactly that
(conlleval-compatible), and it is the headline ``f1``. seqeval's strict IOB2 mode counts only
well-formed entities (``B-X I-X*``) and silently drops a predicted ``I-X`` that starts an entity, which
raises precision on malformed output; it is logged beside as ``f1_strict``. On valid IOB2 sequences
(Viterbi decoding, ``tasks.ner.decoding``) the two agree.

Either way an entity counts as correct only when its type and both boundaries match a gold entity;
scores are micro-averaged over entities, and 0/0 is 0 (no entity anywhere gives P = R = F1 = 0). Token
accuracy is reported separately as ``accuracy`` and never as F1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PROTOCOLS = ("conlleval", "strict")


def entity_spans(tags: Sequence[Sequence[str]], protocol: str) -> set[tuple[int, str, int, int]]:
    """The entities of ``tags`` as ``(sentence, type, first word, last word)`` (last word inclusive).

    ``conlleval``: ``seqeval.metrics.sequence_labeling.get_entities`` (conlleval's chunk rules);
    ``strict``: ``seqeval.scheme.Entities`` with IOB2 in strict mode.

    Raises:
        ValueError: an unknown protocol.
    """
    if protocol == "conlleval":
        from seqeval.metrics.sequence_labeling import get_entities

        return {(i, typ, a, b) for i, sent in enumerate(tags) for typ, a, b in get_entities(list(sent))}
    if protocol == "strict":
        from seqeval.scheme import IOB2, Entities

        entities = Entities([list(s) for s in tags], IOB2, suffix=False)
        return {(e.sent_id, e.tag, e.start, e.end - 1) for sent in entities.entities for e in sent}
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def protocol_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], protocol: str) -> dict[str, Any]:
    """Micro P/R/F1 and per-type rows of one protocol.

    Returns:
        ``{"precision", "recall", "f1", "per_type": {TYPE: {"precision", "recall", "f1", "support",
        "predicted"}}}``; types are those seen in the gold or the predictions, fractions in [0, 1].
    """
    g, p = entity_spans(gold, protocol), entity_spans(pred, protocol)
    hit = g & p
    n_gold, n_pred, n_hit = Counter(e[1] for e in g), Counter(e[1] for e in p), Counter(e[1] for e in hit)
    per_type = {}
    for typ in sorted(set(n_gold) | set(n_pred)):
        tp_, rp, f = _prf(n_hit[typ], n_pred[typ], n_gold[typ])
        per_type[typ] = {"precision": tp_, "recall": rp, "f1": f, "support": n_gold[typ], "predicted": n_pred[typ]}
    precision, recall, f1 = _prf(len(hit), len(p), len(g))
    return {"precision": precision, "recall": recall, "f1": f1, "per_type": per_type,
            "support": len(g), "predicted": len(p)}


def _table(title: str, scores: dict[str, Any]) -> str:
    rows = [f"{title}", f"{'':>14}{'precision':>11}{'recall':>9}{'f1-score':>10}{'support':>9}{'predicted':>11}"]
    for typ, r in scores["per_type"].items():
        rows.append(f"{typ:>14}{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1']:>10.4f}{r['support']:>9}"
                    f"{r['predicted']:>11}")
    rows.append(f"{'micro avg':>14}{scores['precision']:>11.4f}{scores['recall']:>9.4f}{scores['f1']:>10.4f}"
                f"{scores['support']:>9}{scores['predicted']:>11}")
    return "\n".join(rows) + "\n"


def entity_scores(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], unseen_types: Iterable[str] = ()
) -> dict[str, Any]:
    """Entity-level scores under both protocols, token accuracy, and the text report.

    Args:
        gold: word-level IOB2 tags per sentence.
        pred: predicted tags, same shape as ``gold``.
        unseen_types: entity types of the gold that the model was never trained on (``data.unknown_labels=O``);
            they stay in the gold and count as misses, and the report says so.

    Returns:
        ``{"metrics": {...}, "report": str, "protocols": {"conlleval": ..., "strict": ...}}``. Metrics:
        ``precision``, ``recall``, ``f1`` (conlleval-compatible), ``precision_strict``, ``recall_strict``,
        ``f1_strict`` (strict IOB2), ``accuracy`` (token accuracy, 0 with no words), ``f1_<TYPE>`` and
        ``f1_strict_<TYPE>`` per entity type; fractions in [0, 1].

    Raises:
        ValueError: a different number of sentences, or a sentence whose gold and predicted lengths differ.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    both = {name: protocol_scores(gold, pred, name) for name in PROTOCOLS}
    words = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    metrics: dict[str, float] = {"accuracy": correct / words if words else 0.0}
    for name, scores in both.items():
        suffix = "" if name == "conlleval" else f"_{name}"
        for key in ("precision", "recall", "f1"):
            metrics[f"{key}{suffix}"] = scores[key]
        for typ, row in scores["per_type"].items():
            metrics[f"f1{suffix}_{typ}"] = row["f1"]
    report = (_table("entity-level, conlleval-compatible (seqeval default mode): test/f1", both["conlleval"])
              + "\n" + _table("entity-level, strict IOB2 (seqeval mode=strict): test/f1_strict", both["strict"])
              + f"\ntoken accuracy {metrics['accuracy']:.4f} over {words} words\n")
    unseen = sorted(set(unseen_types))
    if unseen:
        counts = {t: both["conlleval"]["per_type"].get(t, {}).get("support", 0) for t in unseen}
        listed = ", ".join(f"{t} ({n})" for t, n in counts.items())
        report += (f"note: gold entities of types never seen in training count as misses: {listed}"
                   " (data.unknown_labels=O)\n")
    return {"metrics": metrics, "report": report, "protocols": both}


def protocol_table(protocols: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of NER's per-type scores under each protocol (``tasks.ner.metrics.entity_scores``)."""
    columns = ["protocol", "label", "precision", "recall", "f1-score", "support", "predicted"]
    rows: list[list[Any]] = []
    for name, scores in protocols.items():
        for typ, r in scores["per_type"].items():
            rows.append([name, typ, r["precision"], r["recall"], r["f1"], r["support"], r["predicted"]])
        rows.append([name, "micro avg", scores["precision"], scores["recall"], scores["f1"], scores["support"],
                     scores["predicted"]])
    return columns, rows


def per_type_figure(metrics: Mapping[str, float], title: str = "Test F1 per entity type"):
    """Horizontal bar chart (a matplotlib ``Figure``, no pyplot state) of the ``f1_<TYPE>`` entries of
    ``metrics``; ``None`` when there are none."""
    averages = ("f1_macro", "f1_micro", "f1_weighted")
    scores = {k[3:]: float(v) for k, v in metrics.items()
              if k.startswith("f1_") and k not in averages and not k.startswith("f1_strict")}
    if not scores:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = sorted(scores)
    fig = Figure(figsize=(6, 0.4 * len(names) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(names, [scores[n] for n in names], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(title)
    for i, n in enumerate(names):
        ax.text(min(scores[n] + 0.01, 0.9), i, f"{scores[n]:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig
