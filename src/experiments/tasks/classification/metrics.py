"""Sequence-classification scores, decision thresholds, the text report and the confusion-matrix image.

Why these functions: the logged metrics come from torchmetrics objects accumulated over the whole epoch
(correct under DDP); everything else (the per-class table, the out-of-scope scores, the threshold sweep)
is derived here from the same epoch-level counts, so the report and the logged numbers cannot disagree.
scikit-learn is deliberately not used: the per-class table is computed from the confusion matrix.

Averaging conventions (the same as torchmetrics 1.x and as scikit-learn's default ``labels=None``):

* single-label macro average: the mean over the classes that occur in the gold labels *or* in the
  predictions of the evaluated split. A class with neither (absent from the split and never predicted)
  is left out of the mean; a class absent from the gold labels but predicted counts with F1 = 0.
* single-label weighted average: weights are the gold supports, so absent classes weigh 0.
* multi-label macro average: the mean over *all* labels; a label with no gold and no predicted positive
  has F1 = 0 (0/0 is taken as 0), as torchmetrics' ``MultilabelF1Score(average="macro")`` does.
* 0/0 is 0 everywhere (precision of a never-predicted class, recall of a class without support).

Decision rules: a multi-label label is predicted when its sigmoid probability is ``>= threshold``; in the
out-of-scope threshold mode an example is predicted ``oos`` when its maximum softmax probability is
``< threshold`` (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and Out-of-Scope
Prediction", EMNLP, the *oos-threshold* baseline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

# Threshold grid searched on the validation epoch: 0.05, 0.10, ..., 0.95.
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _div(num: Tensor, den: Tensor) -> Tensor:
    """Element-wise ``num / den`` with 0 where ``den == 0`` (float64)."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))


# --------------------------------------------------------------------------------------------- scores


def per_class_from_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    """Per-class precision, recall, F1 and support from true/false positive and false negative counts."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    return {
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "support": (tp + fn).long(),
    }


def confusion_counts(cm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(tp, fp, fn) per class of a ``[C, C]`` confusion matrix (rows = gold, columns = predicted)."""
    cm = cm.long()
    tp = cm.diagonal()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp


def single_label_scores(cm: Tensor) -> dict[str, Any]:
    """Accuracy and per-class / macro / weighted precision, recall and F1 of a confusion matrix.

    Macro averages skip classes with no support and no prediction; weighted ones use the supports.

    Returns:
        ``{"per_class": {precision, recall, f1, support}, "accuracy", "macro": {...}, "weighted": {...},
        "n_macro_classes", "total"}`` (averages as Python floats).
    """
    tp, fp, fn = confusion_counts(cm)
    per = per_class_from_counts(tp, fp, fn)
    total = int(cm.sum())
    present = (tp + fp + fn) > 0
    support = per["support"].double()
    out: dict[str, Any] = {"per_class": per, "total": total, "n_macro_classes": int(present.sum())}
    out["accuracy"] = float(tp.sum()) / total if total else 0.0
    for avg in ("macro", "weighted"):
        w = present.double() if avg == "macro" else support
        out[avg] = {
            key: float((per[key] * w).sum() / w.sum()) if float(w.sum()) > 0 else 0.0
            for key in ("precision", "recall", "f1")
        }
    return out


def multi_label_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Any]:
    """Per-label and micro / macro (all labels) / weighted precision, recall and F1 (multi-label)."""
    per = per_class_from_counts(tp, fp, fn)
    support = per["support"].double()
    micro = per_class_from_counts(tp.sum()[None], fp.sum()[None], fn.sum()[None])
    out: dict[str, Any] = {"per_class": per, "micro": {k: float(micro[k][0]) for k in ("precision", "recall", "f1")}}
    n = len(tp)
    out["macro"] = {k: float(per[k].sum() / n) if n else 0.0 for k in ("precision", "recall", "f1")}
    out["weighted"] = {
        k: float((per[k] * support).sum() / support.sum()) if float(support.sum()) > 0 else 0.0
        for k in ("precision", "recall", "f1")
    }
    return out


def oos_scores(cm: Tensor, oos_index: int) -> dict[str, float]:
    """Out-of-scope scores of Larson et al. (2019) from a confusion matrix including the ``oos`` class.

    * ``in_scope_accuracy``: correct predictions among in-scope gold examples (an in-scope example
      rejected as ``oos`` counts as wrong);
    * ``oos_recall``: gold ``oos`` examples predicted ``oos``;
    * ``oos_precision``: examples predicted ``oos`` that are gold ``oos`` (0 when nothing is predicted ``oos``).
    """
    cm = cm.long()
    in_scope = torch.ones(cm.shape[0], dtype=torch.bool)
    in_scope[oos_index] = False
    in_total = int(cm[in_scope].sum())
    in_correct = int(cm.diagonal()[in_scope].sum())
    oos_tp = int(cm[oos_index, oos_index])
    oos_gold = int(cm[oos_index].sum())
    oos_pred = int(cm[:, oos_index].sum())
    return {
        "in_scope_accuracy": in_correct / in_total if in_total else 0.0,
        "oos_recall": oos_tp / oos_gold if oos_gold else 0.0,
        "oos_precision": oos_tp / oos_pred if oos_pred else 0.0,
    }


def class_weights_from_counts(counts: Sequence[int] | Tensor) -> Tensor:
    """Inverse-frequency class weights normalised to mean 1 (``w_c ∝ 1 / n_c``; ``mean(w) = 1``).

    A class with count 0 (possible only with a label list fixed from elsewhere) gets the count 1.
    """
    c = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
    inv = 1.0 / c
    return (inv / inv.mean()).float()


# ------------------------------------------------------------------------------------ thresholds


def apply_oos_threshold(max_prob: Tensor, argmax: Tensor, threshold: float, oos_index: int) -> Tensor:
    """Predicted class ids: ``argmax`` where ``max_prob >= threshold``, else ``oos_index``."""
    return torch.where(max_prob >= threshold, argmax, torch.full_like(argmax, oos_index))


def _pick(grid: Sequence[float], objective: Sequence[float]) -> float:
    """The grid value with the highest objective; ties go to the lowest threshold."""
    best = max(range(len(grid)), key=lambda i: (round(objective[i], 12), -grid[i]))
    return float(grid[best])


def tune_oos_threshold(
    max_prob: Tensor,
    argmax: Tensor,
    target: Tensor,
    oos_index: int,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
) -> tuple[float, list[dict[str, float]]]:
    """Max-softmax-probability threshold maximising in-scope accuracy + out-of-scope recall.

    The objective is the sum of the two headline scores of Larson et al. (2019); without gold ``oos``
    examples it is the in-scope accuracy alone (so the lowest threshold wins). Ties: lowest threshold.

    Args:
        max_prob, argmax: ``[N]`` maximum softmax probability and its class id (in-scope classes only).
        target: ``[N]`` gold class ids; ``oos_index`` marks out-of-scope examples.
        oos_index: id of the ``oos`` class (the number of in-scope classes in threshold mode).
        grid: thresholds to try.

    Returns:
        The chosen threshold and, per grid value, ``{threshold, in_scope_accuracy, oos_recall,
        oos_precision, objective}``.
    """
    is_oos = target == oos_index
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    table = []
    for t in grid:
        pred = apply_oos_threshold(max_prob, argmax, float(t), oos_index)
        in_acc = float(((pred == target) & ~is_oos).sum()) / n_in if n_in else 0.0
        pred_oos = pred == oos_index
        recall = float((pred_oos & is_oos).sum()) / n_oos if n_oos else 0.0
        precision = float((pred_oos & is_oos).sum()) / int(pred_oos.sum()) if int(pred_oos.sum()) else 0.0
        table.append({"threshold": float(t), "in_scope_accuracy": in_acc, "oos_recall": recall,
                      "oos_precision": precision, "objective": in_acc + recall})
    return _pick(list(grid), [r["objective"] for r in table]), table


def tune_multilabel_threshold(
    probs: Tensor, target: Tensor, grid: Sequence[float] = DEFAULT_THRESHOLD_GRID
) -> tuple[float, list[dict[str, float]]]:
    """One global sigmoid threshold maximising micro-F1 (labels predicted where ``prob >= t``).

    Ties go to the lowest threshold.

    Args:
        probs: ``[N, C]`` sigmoid probabilities.
        target: ``[N, C]`` multi-hot gold labels.
        grid: thresholds to try.

    Returns:
        The chosen threshold and, per grid value, ``{threshold, f1_micro}``.
    """
    gold = target.bool()
    table = []
    for t in grid:
        pred = probs >= float(t)
        tp = int((pred & gold).sum())
        fp = int((pred & ~gold).sum())
        fn = int((~pred & gold).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
        table.append({"threshold": float(t), "f1_micro": f1})
    return _pick(list(grid), [r["f1_micro"] for r in table]), table


# ------------------------------------------------------------------------------------------ report


def format_report(
    labels: Sequence[str],
    per_class: dict[str, Tensor],
    summary: Sequence[tuple[str, float | None, float | None, float, int]],
    notes: Sequence[str] = (),
    digits: int = 4,
) -> str:
    """A scikit-learn-style text table: one row per class, a blank line, then summary rows.

    Args:
        labels: class names, in class-id order.
        per_class: ``precision``, ``recall``, ``f1``, ``support`` tensors ``[C]``.
        summary: rows ``(name, precision or None, recall or None, f1, support)`` (``accuracy`` rows give
            only the f1 column, as scikit-learn does).
        notes: lines appended after a blank line.
        digits: decimals of the scores.
    """
    headers = ("precision", "recall", "f1-score", "support")
    width = max([len("weighted avg"), *(len(str(lab)) for lab in labels)])
    col = max(len(h) for h in headers) + 1
    col = max(col, digits + 3)
    lines = [" " * width + "".join(h.rjust(col) for h in headers), ""]

    def fmt(v: float | None) -> str:
        return ("" if v is None else f"{v:.{digits}f}").rjust(col)

    for i, lab in enumerate(labels):
        lines.append(
            str(lab).rjust(width)
            + fmt(float(per_class["precision"][i]))
            + fmt(float(per_class["recall"][i]))
            + fmt(float(per_class["f1"][i]))
            + str(int(per_class["support"][i])).rjust(col)
        )
    lines.append("")
    for name, p, r, f, s in summary:
        lines.append(name.rjust(width) + fmt(p) + fmt(r) + fmt(f) + str(int(s)).rjust(col))
    if notes:
        lines.append("")
        lines.extend(notes)
    # Rows are right-aligned as in scikit-learn; no line ends with spaces.
    lines = [line.rstrip() for line in lines]
    return "\n".join(lines) + "\n"


def single_label_report(
    cm: Tensor,
    labels: Sequence[str],
    *,
    oos_index: int | None = None,
    threshold: float | None = None,
    digits: int = 4,
) -> tuple[str, dict[str, Any]]:
    """Report text and scores of a single-label confusion matrix (see :func:`single_label_scores`)."""
    s = single_label_scores(cm)
    total = s["total"]
    summary = [
        ("accuracy", None, None, s["accuracy"], total),
        ("macro avg", s["macro"]["precision"], s["macro"]["recall"], s["macro"]["f1"], total),
        ("weighted avg", s["weighted"]["precision"], s["weighted"]["recall"], s["weighted"]["f1"], total),
    ]
    notes = []
    if s["n_macro_classes"] < len(labels):
        notes.append(
            f"macro avg over the {s['n_macro_classes']} of {len(labels)} classes that occur in the gold "
            "labels or the predictions"
        )
    if oos_index is not None:
        o = oos_scores(cm, oos_index)
        s["oos"] = o
        notes.append(
            f"out-of-scope ({labels[oos_index]}): in-scope accuracy {o['in_scope_accuracy']:.{digits}f}, "
            f"recall {o['oos_recall']:.{digits}f}, precision {o['oos_precision']:.{digits}f}"
        )
    if threshold is not None and oos_index is not None:
        notes.append(f"examples whose maximum probability is below {threshold:g} are predicted {labels[oos_index]}")
    return format_report(labels, s["per_class"], summary, notes, digits), s


def multi_label_report(
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    labels: Sequence[str],
    *,
    subset_accuracy: float,
    n_examples: int,
    threshold: float,
    digits: int = 4,
) -> tuple[str, dict[str, Any]]:
    """Report text and scores of multi-label per-label counts (see :func:`multi_label_scores`)."""
    s = multi_label_scores(tp, fp, fn)
    n_pos = int(s["per_class"]["support"].sum())
    summary = [
        ("micro avg", s["micro"]["precision"], s["micro"]["recall"], s["micro"]["f1"], n_pos),
        ("macro avg", s["macro"]["precision"], s["macro"]["recall"], s["macro"]["f1"], n_pos),
        ("weighted avg", s["weighted"]["precision"], s["weighted"]["recall"], s["weighted"]["f1"], n_pos),
        ("subset acc", None, None, subset_accuracy, n_examples),
    ]
    notes = [f"support = gold positives per label; decision threshold (probability >= t): {threshold:g}"]
    return format_report(labels, s["per_class"], summary, notes, digits), s


# ------------------------------------------------------------------------------- confusion image


def confusion_figure(
    cm: Tensor | Sequence[Sequence[int]],
    labels: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    title: str = "Confusion matrix",
):
    """A matplotlib ``Figure`` (Agg canvas, no pyplot state) of a count matrix: rows gold, columns predicted.

    Cells are annotated with their counts when the matrix has at most 30 columns and rows.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = torch.as_tensor(cm).long().numpy()
    columns = list(labels) if columns is None else list(columns)
    n_rows, n_cols = m.shape
    size = min(30.0, max(5.0, 0.3 * max(n_rows, n_cols) + 2.0))
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(m, cmap="Blues", interpolation="nearest", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = 8 if max(n_rows, n_cols) <= 30 else 5
    ax.set_xticks(range(n_cols), [str(c) for c in columns], rotation=90, fontsize=font)
    ax.set_yticks(range(n_rows), [str(r) for r in labels], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if max(n_rows, n_cols) <= 30:
        high = m.max() / 2 if m.size else 0
        for i in range(n_rows):
            for j in range(n_cols):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=font,
                        color="white" if m[i, j] > high else "black")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- epoch-level outputs


class EpochOutputs(Metric):
    """Per-example outputs of one evaluation epoch, gathered over DDP ranks by torchmetrics.

    Stores ``example_id`` ``[N]``, ``scores`` ``[N, K]`` (top-k softmax probabilities, or all sigmoid
    probabilities for multi-label), ``indices`` ``[N, K]`` (class ids of ``scores``) and ``target``
    (``[N]`` class ids or ``[N, C]`` multi-hot). :meth:`compute` returns the rows of all ranks, one per
    example id (DistributedSampler padding repeats examples), sorted by id; :meth:`local` this rank's.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        for name in ("example_id", "scores", "indices", "target"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, example_id: Tensor, scores: Tensor, indices: Tensor, target: Tensor) -> None:
        self.example_id.append(example_id.long())
        self.scores.append(scores.float())
        self.indices.append(indices.long())
        self.target.append(target.long())

    @staticmethod
    def _rows(example_id: Any, scores: Any, indices: Any, target: Any) -> dict[str, Tensor]:
        if isinstance(example_id, list) and not example_id:
            empty = torch.zeros(0, dtype=torch.long)
            return {"example_id": empty, "scores": torch.zeros(0, 0), "indices": empty[:, None], "target": empty}
        ids = dim_zero_cat(example_id)
        rows = {"example_id": ids, "scores": dim_zero_cat(scores), "indices": dim_zero_cat(indices),
                "target": dim_zero_cat(target)}
        order = torch.argsort(ids, stable=True)
        ids_sorted = ids[order]
        keep = torch.ones_like(ids_sorted, dtype=torch.bool)
        keep[1:] = ids_sorted[1:] != ids_sorted[:-1]
        return {k: v[order][keep] for k, v in rows.items()}

    def compute(self) -> dict[str, Tensor]:
        return self._rows(self.example_id, self.scores, self.indices, self.target)

    def local(self) -> dict[str, Tensor]:
        """This rank's rows (not synchronised), sorted by example id."""
        return self._rows(self.example_id, self.scores, self.indices, self.target)


def class_table(labels: Sequence[str], scores: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-class scores of a classification result
    (``tasks.classification.metrics.single_label_scores`` / ``multi_label_scores``): one row per class, then
    the macro and weighted averages (and micro, multi-label)."""
    per = scores["per_class"]
    columns = ["label", "precision", "recall", "f1-score", "support"]
    rows: list[list[Any]] = []
    for i, label in enumerate(labels[: len(per["f1"])]):
        rows.append([label, float(per["precision"][i]), float(per["recall"][i]), float(per["f1"][i]),
                     int(per["support"][i])])
    total = int(sum(int(x) for x in per["support"]))
    for avg in ("micro", "macro", "weighted"):
        if avg in scores:
            r = scores[avg]
            rows.append([f"{avg} avg", float(r["precision"]), float(r["recall"]), float(r["f1"]), total])
    return columns, rows
