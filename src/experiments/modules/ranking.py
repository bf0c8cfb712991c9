"""Ranking (click prediction): one module for the cross-encoder and the two-tower recommender.

Why one module: both score (user, candidate) pairs and are trained and evaluated the same way; only the
scoring differs. Training is :class:`~experiments.modules.base.EncoderModule`'s shared step (optimizer,
schedule, FGM/PGD): :meth:`RankingModule.forward_loss` runs one forward of the encoder over the whole batch
and returns the NRMS loss (Wu et al. 2019, EMNLP): softmax cross-entropy over the scores of one clicked
and K sampled non-clicked candidates of the same impression. The adversary hooks the encoder's input
embeddings and calls ``forward_loss`` again, so the perturbed loss goes through the same forward.

Scoring (``architecture``):

* ``cross_encoder``: ``AutoModelForSequenceClassification`` with one label; the score of a candidate is
  the logit of the pair (user history titles, candidate text), from the [CLS] vector.
* ``two_tower``: ``AutoModel``; an item vector is the mean of its token states (attention mask), the user
  vector the mean of the history item vectors (``user_pooling=mean``; a user without history gets the
  zero vector, so all candidates tie), the score their dot product.

Evaluation scores every candidate of every impression and logs, per stage (``val``, ``test``), the MIND
metrics averaged over impressions (``tasks.recommendation.metrics``): ``{stage}/auc``, ``{stage}/mrr``,
``{stage}/ndcg@5``, ``{stage}/ndcg@10``, plus ``{stage}/impressions`` (averaged) and
``{stage}/excluded_impressions`` (no click or no non-click). Each evaluation leaves an
:class:`~experiments.evaluation.EvaluationResult` in ``self.results[stage]``; for test and predict it
carries ``prediction.txt`` in the MIND submission format.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.errors import ConfigError
from experiments.evaluation import ClickData, EvaluationResult
from experiments.models.pooling import mean_pool
from experiments.modules.base import EncoderModule
from experiments.tasks.recommendation.metrics import METRICS, ranking_metrics, ranks_from_scores, report

ARCHITECTURES = ("cross_encoder", "two_tower")
USER_POOLING = ("mean",)
_SPLIT = {"val": "validation", "test": "test"}


class RankingModule(EncoderModule):
    """Scores candidates for users; see the module docstring.

    Args:
        *args, **kwargs: see :class:`EncoderModule` (``model``, ``labels``, ``optimizer``, ...).
        architecture: ``cross_encoder`` (model: sequence classification, one label) or ``two_tower``
            (model: encoder).
        user_pooling: how the two-tower user vector pools history item vectors (``mean``).
    """

    data_protocol = ClickData

    def __init__(self, *args: Any, architecture: str = "cross_encoder", user_pooling: str = "mean", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if architecture not in ARCHITECTURES:
            raise ConfigError(f"module.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if user_pooling not in USER_POOLING:
            raise ConfigError(f"module.user_pooling must be one of {USER_POOLING}, got {user_pooling!r}")
        self.architecture = architecture
        self.user_pooling = user_pooling
        self.hparams.update({"architecture": architecture, "user_pooling": user_pooling})
        self._scores: dict[int, list[float]] = {}
        self.results: dict[str, EvaluationResult] = {}

    # ---- scoring and loss -------------------------------------------------------------------------
    def score(self, batch: dict[str, Any]) -> Tensor:
        """Scores ``[B, C]`` (float32) of the batch's candidates; padding positions are ``-inf``."""
        mask = batch["candidate_mask"]
        if self.architecture == "cross_encoder":
            logits = self.model(**batch["inputs"]).logits  # [pairs, 1], pairs in row-major mask order
            scores = torch.full(mask.shape, float("-inf"), device=logits.device)
            return scores.masked_scatter(mask, logits[:, 0].float())
        hidden = self.model(**batch["inputs"]).last_hidden_state.float()  # [items, T, D]
        items = mean_pool(hidden, batch["inputs"]["attention_mask"])  # [items, D]
        h_index = batch["history_index"]
        h_mask = (h_index >= 0).unsqueeze(-1).to(items.dtype)
        user = (items[h_index.clamp(min=0)] * h_mask).sum(1) / h_mask.sum(1).clamp(min=1.0)  # [B, D]
        candidates = items[batch["candidate_index"].clamp(min=0)]  # [B, C, D]
        scores = torch.einsum("bcd,bd->bc", candidates, user)
        return scores.masked_fill(~mask, float("-inf"))

    def compute_loss(self, outputs: Tensor, batch: dict[str, Any]) -> Tensor:
        """Softmax cross-entropy of the scores ``outputs`` ``[B, K+1]``, the clicked candidate as target."""
        return F.cross_entropy(outputs.float(), batch["labels"].argmax(dim=1))

    def forward_loss(self, batch: dict[str, Any]) -> Tensor:
        return self.compute_loss(self.score(batch), batch)

    def count_examples(self, batch: dict[str, Any]) -> int:
        return int(batch["candidate_mask"].shape[0])

    # ---- evaluation -------------------------------------------------------------------------------
    def _batch_scores(self, batch: dict[str, Any]) -> list[tuple[int, list[float]]]:
        scores = self.score(batch).detach().float().cpu()
        mask = batch["candidate_mask"].cpu()
        return [(i, row[m].tolist()) for i, row, m in zip(batch["impression_index"].tolist(), scores, mask,
                                                          strict=True)]

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        self._scores.update(self._batch_scores(batch))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self._batch_scores(batch)

    def reset_evaluation(self) -> None:
        self._scores = {}

    def _gather(self, scores: dict[int, list[float]]) -> dict[int, list[float]]:
        if self.trainer.world_size == 1:
            return scores
        from experiments.distributed import gather_objects

        merged: dict[int, list[float]] = {}
        for part in gather_objects(scores, self.trainer.world_size):
            merged.update(part)
        return merged

    def evaluation_epoch_end(self, stage: str) -> None:
        scores = self._gather(self._scores)
        self._scores = {}
        impressions = self.data().impressions(_SPLIT[stage])
        pairs = [(impressions[i].labels, s) for i, s in sorted(scores.items()) if impressions[i].labels is not None]
        metrics = ranking_metrics(pairs)
        for key in METRICS:
            self.log(f"{stage}/{key}", metrics[key], prog_bar=key == "auc")
        self.log(f"{stage}/impressions", float(metrics["impressions"]))
        self.log(f"{stage}/excluded_impressions", float(metrics["excluded_impressions"]))
        title = f"{self.architecture}, {len(scores)} impressions scored (MIND metrics, mean over impressions)"
        self.results[stage] = EvaluationResult(stage, {k: metrics[k] for k in (*METRICS, "impressions",
                                                                             "excluded_impressions")},
                                               report=report(metrics, title), details={"scores": scores})
        if stage == "test" and self.trainer.is_global_zero:
            dm = self.data()
            self.results[stage] = replace(self.results[stage], records=self.prediction_records(dm, "test"),
                                          files={"prediction.txt": self.submission(dm, "test")})

    # ---- outputs ----------------------------------------------------------------------------------
    def _split_scores(self, split: str, rows: list | None) -> dict[int, list[float]]:
        if split == "predict":
            return {i: s for batch in rows or [] for i, s in batch}
        return self.results[split].details["scores"]

    def prediction_records(self, datamodule: Any, split: str, rows: list | None = None) -> list[dict]:
        """One dict per scored impression: id, user, candidates, scores, ranks (1 = best) and gold labels.

        ``rows`` are ``predict_step`` outputs (predict split); the test split uses the last test epoch.
        """
        impressions = datamodule.impressions(split)
        records = []
        for i, scores in sorted(self._split_scores(split, rows).items()):
            imp = impressions[i]
            record = {"impression_id": imp.impression_id, "user_id": imp.user_id, "candidates": imp.candidates,
                      "scores": [round(s, 6) for s in scores], "ranks": ranks_from_scores(scores)}
            if imp.labels is not None:
                record["labels"] = imp.labels
            records.append(record)
        return records

    def submission(self, datamodule: Any, split: str, rows: list | None = None) -> str:
        """``prediction.txt`` in the MIND submission format: ``impression_id [r1,r2,...]`` per scored
        impression in file order, r_i the rank of the i-th candidate (ties: see ``metrics``)."""
        impressions = datamodule.impressions(split)
        return "".join(f"{impressions[i].impression_id} [{','.join(map(str, ranks_from_scores(s)))}]\n"
                       for i, s in sorted(self._split_scores(split, rows).items()))

    def predict_result(self, datamodule: Any, rows: list) -> EvaluationResult:
        return EvaluationResult("predict", {}, records=self.prediction_records(datamodule, "predict", rows),
                                files={"prediction.txt": self.submission(datamodule, "predict", rows)})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("architecture")
        if saved and saved != self.architecture:
            raise ConfigError(f"the checkpoint holds a {saved} recommender; run with recommender={saved}")
        super().on_load_checkpoint(checkpoint)
