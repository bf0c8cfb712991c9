"""Entity-level scores for NER, computed by seqeval in strict IOB2 mode.

Strict mode counts an entity as correct only when its type and both boundaries match the gold entity
exactly, as conlleval does for CoNLL-2003 (Tjong Kim Sang & De Meulder 2003). Scores are
micro-averaged over entities. Token accuracy is reported separately as ``accuracy`` and never as F1.
"""

from __future__ import annotations

from typing import Any


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Micro entity precision/recall/F1, per-type F1 and seqeval's text report.

    Args:
        gold: word-level IOB2 tags per sentence.
        pred: predicted IOB2 tags, same shape as ``gold``.

    Returns:
        ``{"metrics": {"precision", "recall", "f1", "accuracy", "f1_<TYPE>"...}, "report": str}``;
        values are fractions in [0, 1].

    Raises:
        ValueError: when a sentence's gold and predicted lengths differ.
    """
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    metrics = {
        "precision": float(precision_score(gold, pred, average="micro", **kw)),
        "recall": float(recall_score(gold, pred, average="micro", **kw)),
        "f1": float(f1_score(gold, pred, average="micro", **kw)),
        "accuracy": float(accuracy_score(gold, pred)),
    }
    per_type = classification_report(gold, pred, output_dict=True, digits=4, **kw)
    for name, row in per_type.items():
        if not name.endswith("avg"):
            metrics[f"f1_{name}"] = float(row["f1-score"])
    report = classification_report(gold, pred, digits=4, **kw)
    return {"metrics": metrics, "report": report}
