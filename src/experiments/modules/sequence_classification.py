"""Sequence classification (sentiment, intents, the user's labels): one module, single- or multi-label.

Why this shape: training is :class:`~experiments.modules.base.EncoderModule`'s (optimizer, schedule,
adversary); this module only turns logits into a loss and evaluates. Scores are torchmetrics objects held
as attributes and accumulated over the whole epoch (synchronised over DDP ranks on ``compute``), never
averaged over batches. The per-class report, the out-of-scope scores and the confusion matrix are derived
from the same epoch-level confusion counts (``tasks.classification.metrics``).

Logged keys (``stage`` is ``val`` or ``test``):

* single-label: ``{stage}/accuracy``, ``{stage}/f1_macro``, ``{stage}/f1_weighted`` and ``{stage}/f1``
  (= macro-F1, so ``monitor.metric=val/f1`` works for every task family); with an ``oos`` class also
  ``{stage}/in_scope_accuracy``, ``{stage}/oos_recall``, ``{stage}/oos_precision``.
* multi-label: ``{stage}/f1_micro``, ``{stage}/f1_macro``, ``{stage}/subset_accuracy`` and ``{stage}/f1``
  (= micro-F1).
* ``{stage}/loss``; ``{stage}/threshold`` when a decision threshold is in use.

Decision thresholds. Multi-label: a label is predicted when its sigmoid probability is ``>= threshold``.
Out-of-scope threshold mode (``oos="threshold"``, Larson et al. 2019): the model is trained without the
``oos`` class and an example is predicted ``oos`` when its maximum softmax probability is ``< threshold``.
With ``threshold="tune"`` the threshold is chosen at the end of every validation epoch on a grid
(0.05..0.95): maximal micro-F1 (multi-label) or maximal in-scope accuracy + oos recall (out-of-scope);
the validation scores are those at the chosen threshold, and test uses the threshold of the checkpoint
tested. The threshold is a persistent buffer (saved in checkpoints, returned by ``ddp_spawn``) and is
written to the exported model's config (``config.decision_threshold``), so test and predict runs use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelExactMatch,
    MultilabelF1Score,
    MultilabelStatScores,
)

from experiments.errors import ConfigError
from experiments.evaluation import EvaluationResult, SequenceClassificationData
from experiments.modules.base import EncoderModule, model_inputs
from experiments.tasks.classification import metrics as M

log = logging.getLogger(__name__)

STAGES = ("val", "test")
CLASS_WEIGHTS = ("none", "balanced")
_SPLIT = {"val": "validation", "test": "test"}


class SequenceClassificationModule(EncoderModule):
    """Fine-tunes ``AutoModelForSequenceClassification``; each evaluation leaves an
    :class:`~experiments.evaluation.EvaluationResult` in ``self.results[stage]``.

    Args:
        *args, **kwargs: see :class:`EncoderModule` (``model``, ``labels``, ``optimizer``, ...).
        multi_label: sigmoid + ``BCEWithLogits`` over independent labels instead of softmax + CE.
        class_weights: ``none`` or ``balanced``. Single-label: CE weights inversely proportional to the
            training class counts, normalised to mean 1. Multi-label: BCE ``pos_weight`` = negatives /
            positives per label. Counts come from ``trainer.datamodule.class_counts()``.
        threshold: a number, or ``"tune"`` (chosen on each validation epoch); used by multi-label and by
            ``oos="threshold"``, ignored otherwise.
        threshold_grid: thresholds tried by ``"tune"`` (default 0.05, 0.10, ..., 0.95).
        oos: the data's out-of-scope mode (``None``, ``class``, ``threshold``, ``exclude``); only
            ``threshold`` changes the module (an extra evaluation class ``oos_label`` after ``labels``).
        oos_label: name of the out-of-scope class; its scores are reported whenever it is evaluated.
        top_k: how many class probabilities each prediction record lists (``None``: all).
    """

    data_protocol = SequenceClassificationData

    def __init__(
        self,
        *args: Any,
        multi_label: bool = False,
        class_weights: str = "none",
        threshold: float | str = 0.5,
        threshold_grid: Sequence[float] | None = None,
        oos: str | None = None,
        oos_label: str = "oos",
        top_k: int | None = 5,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"module.class_weights must be none or balanced; got {class_weights!r}")
        self.tune = threshold == "tune"
        if not self.tune:
            try:
                threshold = float(threshold)
            except (TypeError, ValueError):
                raise ConfigError(f"module.threshold must be a number or 'tune'; got {threshold!r}") from None
            if not 0.0 <= threshold <= 1.0:
                raise ConfigError(f"module.threshold must be in [0, 1]; got {threshold}")
        self.multi_label = bool(multi_label)
        self.oos_threshold = oos == "threshold"
        if self.multi_label and self.oos_threshold:
            raise ConfigError("oos=threshold is for single-label data")
        self.class_weights = class_weights
        self.grid = tuple(float(t) for t in (threshold_grid or M.DEFAULT_THRESHOLD_GRID))
        self.oos_label = oos_label
        self.top_k = top_k
        self.uses_threshold = self.multi_label or self.oos_threshold
        saved = getattr(getattr(self.model, "config", None), "decision_threshold", None)
        start = float(saved) if self.tune and saved is not None else (0.5 if self.tune else threshold)
        # A persistent buffer: the threshold travels with the weights (checkpoints, ddp_spawn's return).
        self.register_buffer("decision_threshold", torch.tensor(start, dtype=torch.float32))
        self.eval_labels = list(self.labels)
        if self.oos_threshold and oos_label not in self.eval_labels:
            self.eval_labels.append(oos_label)
        self.oos_index = self.eval_labels.index(oos_label) if oos_label in self.eval_labels else None
        self.hparams.update({"multi_label": self.multi_label, "oos": oos, "oos_label": oos_label,
                             "threshold": threshold, "class_weights": class_weights})
        n = len(self.labels)
        if class_weights == "balanced":
            # Persistent so that a test run from a checkpoint reports the same weighted loss.
            self.register_buffer("loss_weight", torch.ones(n))
        else:
            self.loss_weight = None
        self.val_metrics = self._make_metrics()
        self.test_metrics = self._make_metrics()
        self.val_outputs = M.EpochOutputs()
        self.test_outputs = M.EpochOutputs()
        self.results: dict[str, EvaluationResult] = {}

    def _make_metrics(self) -> MetricCollection:
        if self.multi_label:
            n = len(self.labels)
            return MetricCollection({
                "f1_micro": MultilabelF1Score(n, average="micro"),
                "f1_macro": MultilabelF1Score(n, average="macro"),
                "subset_accuracy": MultilabelExactMatch(n),
                "stats": MultilabelStatScores(n, average=None),
            }, compute_groups=False)
        n = len(self.eval_labels)
        return MetricCollection({
            "accuracy": MulticlassAccuracy(n, average="micro"),
            "f1_macro": MulticlassF1Score(n, average="macro"),
            "f1_weighted": MulticlassF1Score(n, average="weighted"),
            "confusion": MulticlassConfusionMatrix(n),
        }, compute_groups=False)

    # ---- training ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.class_weights == "balanced":
            dm = self.data()
            counts = dm.class_counts().double()
            if self.multi_label:
                n = dm.num_examples("train")
                weight = ((n - counts) / counts.clamp(min=1.0)).clamp(min=0.0)
            else:
                weight = M.class_weights_from_counts(counts)
            self.loss_weight = weight.float().to(self.loss_weight.device)
            log.info("class weights: %s", {lab: round(float(w), 4) for lab, w in zip(self.labels, weight, strict=True)})

    def compute_loss(self, outputs: Any, batch: dict[str, Any]) -> Tensor:
        if "pair_similarity" in batch:  # finetune=setfit: the model's contrastive loss on a pair batch
            return outputs.loss
        logits = outputs.logits.float()
        target = batch["labels"]
        weight = None if self.loss_weight is None else self.loss_weight.to(logits.device)
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight)
        # Out-of-scope gold (class id == number of model classes) has no logit: left out of the loss.
        target = target.masked_fill(target >= logits.shape[-1], -100)
        if bool((target == -100).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=weight, ignore_index=-100)

    # ---- the SetFit head (finetune=setfit) ----------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        if self.trainer.state.fn == "fit":
            self.fit_setfit_head()

    def on_train_epoch_end(self) -> None:
        # Before the checkpoint callbacks of this epoch end run (Lightning calls the module's hook first).
        self.fit_setfit_head()

    def fit_setfit_head(self) -> None:
        """``finetune=setfit``: embed the training split with the current encoder and fit the head on it
        (:meth:`~experiments.finetune.setfit.SetFitClassifier.fit_head`); a no-op for other models and when the
        encoder has not changed since the last fit."""
        from experiments.finetune.setfit import SetFitClassifier

        dm = self.data() if self._trainer is not None else None
        if not isinstance(self.model, SetFitClassifier) or dm is None or \
                getattr(self, "_head_step", None) == self.global_step:
            return
        emb, target = self.model.embed_batches(dm.embedding_loader("train"), self.device)
        if not self.multi_label:
            keep = target < len(self.labels)  # out-of-scope gold of oos=threshold has no class
            emb, target = emb[keep], target[keep]
        self.model.fit_head(emb, target, class_weight="balanced" if self.class_weights == "balanced" else None)
        self._head_step = self.global_step

    # ---- evaluation -------------------------------------------------------------------------------
    def scores(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """(scores, class ids) kept per example: all sigmoid probabilities (multi-label) or top-k softmax."""
        logits = logits.float()
        if self.multi_label:
            probs = torch.sigmoid(logits)
            return probs, torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)
        probs = logits.softmax(-1)
        k = probs.shape[-1] if self.top_k is None else max(1, min(int(self.top_k), probs.shape[-1]))
        # A stable sort, not topk: tied probabilities keep class-id order on every CPU.
        values, indices = probs.sort(dim=-1, descending=True, stable=True)
        return values[:, :k], indices[:, :k]

    def decide(self, scores: Tensor, indices: Tensor, threshold: float | None = None) -> Tensor:
        """Predictions: multi-hot ``[N, C]`` (multi-label) or class ids ``[N]`` (oos below the threshold)."""
        t = self.threshold if threshold is None else threshold
        if self.multi_label:
            return (scores >= t).long()
        if self.oos_threshold:
            return M.apply_oos_threshold(scores[:, 0], indices[:, 0], t, self.oos_index)
        return indices[:, 0]

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        outputs = self.model(**model_inputs(batch))
        scores, indices = self.scores(outputs.logits)
        target = batch["labels"]
        getattr(self, f"{stage}_outputs").update(batch["example_id"], scores, indices, target)
        if not (self.tune and self.uses_threshold and stage == "val"):
            getattr(self, f"{stage}_metrics").update(self.decide(scores, indices), target.long())
        loss = self.compute_loss(outputs, batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        scores, indices = self.scores(self.model(**model_inputs(batch)).logits)
        return {"example_id": batch["example_id"].cpu(), "scores": scores.cpu(), "indices": indices.cpu()}

    def _tune_threshold(self, outputs: M.EpochOutputs) -> dict[str, Any]:
        """Choose the threshold on the whole (all-rank) validation epoch; returns the sweep."""
        rows = outputs.compute()
        if not len(rows["example_id"]):
            return {}
        if self.multi_label:
            best, table = M.tune_multilabel_threshold(rows["scores"], rows["target"], self.grid)
        else:
            best, table = M.tune_oos_threshold(rows["scores"][:, 0], rows["indices"][:, 0], rows["target"],
                                               self.oos_index, self.grid)
        self.set_threshold(best)
        # Update the metrics with this rank's rows only: compute() then sums the ranks exactly once.
        local = outputs.local()
        self.val_metrics.update(self.decide(local["scores"], local["indices"]), local["target"])
        return {"threshold": best, "sweep": table}

    @property
    def threshold(self) -> float:
        """The decision threshold in use (multi-label and ``oos="threshold"``), to 6 decimals.

        Stored as float32 (float64 buffers fail on some accelerators); rounding gives back the grid value.
        """
        return round(float(self.decision_threshold), 6)

    def set_threshold(self, value: float) -> None:
        """Use ``value`` from now on; it is also written to the model config (exported with the model)."""
        self.decision_threshold.fill_(float(value))
        self._threshold_to_config()

    def _threshold_to_config(self) -> None:
        config = getattr(self.model, "config", None)
        if config is not None and self.uses_threshold:
            config.decision_threshold = self.threshold

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._threshold_to_config()  # a checkpoint's (or a spawned worker's) threshold, for export
        return result

    def evaluation_epoch_end(self, stage: str) -> None:
        collection: MetricCollection = getattr(self, f"{stage}_metrics")
        outputs: M.EpochOutputs = getattr(self, f"{stage}_outputs")
        result: dict[str, Any] = {}
        if self.tune and self.uses_threshold and stage == "val":
            result.update(self._tune_threshold(outputs))
        values = collection.compute()
        logged: dict[str, float] = {}
        if self.multi_label:
            stats = values["stats"].long()  # [C, 5]: tp, fp, tn, fn, support
            tp, fp, tn, fn = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
            for key in ("f1_micro", "f1_macro", "subset_accuracy"):
                logged[key] = float(values[key])
            logged["f1"] = logged["f1_micro"]
            n_examples = int(stats[0, :4].sum()) if len(stats) else 0
            report, scores = M.multi_label_report(tp, fp, fn, self.labels, subset_accuracy=logged["subset_accuracy"],
                                                  n_examples=n_examples, threshold=self.threshold)
            cm = torch.stack([tn, fp, fn, tp], dim=1)
            columns: list[str] | None = ["TN", "FP", "FN", "TP"]
        else:
            cm = values["confusion"].long()
            for key in ("accuracy", "f1_macro", "f1_weighted"):
                logged[key] = float(values[key])
            logged["f1"] = logged["f1_macro"]
            report, scores = M.single_label_report(
                cm, self.eval_labels, oos_index=self.oos_index,
                threshold=self.threshold if self.oos_threshold else None,
            )
            if self.oos_index is not None:
                logged.update(scores["oos"])
            columns = None
        if self.uses_threshold:
            logged["threshold"] = self.threshold
        for key, value in logged.items():
            # Values are already synchronised over ranks by torchmetrics: no sync_dist here.
            self.log(f"{stage}/{key}", value, prog_bar=key in ("accuracy", "f1"))
        details = {**result, "scores": scores, "confusion_matrix": cm.tolist(), "labels": list(self.eval_labels),
                   "threshold": self.threshold if self.uses_threshold else None}
        if stage == "test":
            details["outputs"] = outputs.compute()
        collection.reset()
        outputs.reset()
        self.results[stage] = EvaluationResult(stage, logged, report=report, details=details,
                                               table=M.class_table(list(self.eval_labels), scores))
        if stage == "test" and self.trainer.is_global_zero:
            rows = self.labels if self.multi_label else self.eval_labels
            title = "Per-label counts (multi-label)" if self.multi_label else "Confusion matrix (test)"
            figure = M.confusion_figure(cm, rows, columns=columns, title=title)
            dm = self.data()
            self.results[stage] = replace(self.results[stage], figures={"confusion_matrix.png": figure},
                                          records=self.prediction_records(dm, "test") if dm is not None else [])

    # ---- records ----------------------------------------------------------------------------------
    def prediction_records(self, datamodule: Any, split: str, rows: list[dict] | None = None) -> list[dict]:
        """One JSON-able dict per example: ``id``, ``text`` (``text_pair``), ``predicted``, ``probabilities``
        (the ``top_k`` most probable classes, or every label for multi-label) and, for test, ``gold``.

        ``rows`` are ``predict_step`` outputs (predict split); the test split uses the last test epoch.
        Multi-label ``predicted``/``gold`` are lists of labels.
        """
        if split == "predict":
            if not rows:
                return []
            data = {k: torch.cat([r[k] for r in rows]) for k in ("example_id", "scores", "indices")}
        else:
            data = self.results["test"].details["outputs"]
        examples = datamodule.examples[split]
        if not len(data["example_id"]):
            return []
        predicted = self.decide(data["scores"], data["indices"])
        records = []
        for row, ex_id in enumerate(data["example_id"].tolist()):
            ex = examples[ex_id]
            rec: dict[str, Any] = {"id": ex.id, "text": ex.text}
            if ex.text_pair is not None:
                rec["text_pair"] = ex.text_pair
            if split != "predict":
                rec["gold"] = list(ex.label) if isinstance(ex.label, tuple) else ex.label
            scores, indices = data["scores"][row], data["indices"][row]
            if self.multi_label:
                rec["predicted"] = [self.labels[i] for i in predicted[row].nonzero().flatten().tolist()]
                k = len(scores) if self.top_k is None else min(int(self.top_k), len(scores))
                values, order = scores.sort(descending=True, stable=True)
                rec["probabilities"] = {self.labels[int(i)]: round(float(p), 6)
                                        for p, i in zip(values[:k], order[:k], strict=True)}
            else:
                rec["predicted"] = self.eval_labels[int(predicted[row])]
                rec["probabilities"] = {self.labels[int(i)]: round(float(p), 6)
                                        for p, i in zip(scores, indices, strict=True)}
            records.append(rec)
        return records
