"""Answer selection: a bi-encoder or a cross-encoder ranks answer templates for a customer message.

Why one module for both: they share the training step (:class:`~experiments.modules.base.EncoderModule`,
so FGM/PGD, LoRA, accumulation and AMP work unchanged), the metrics and the outputs; only scoring differs.

* ``bi_encoder`` (``model.head=encoder``): the same encoder embeds messages and answers (mean of the token
  states under the attention mask, L2-normalised); score = cosine. Trained with in-batch negatives: the
  loss is the cross-entropy of ``scale * cos`` over the batch's answers, the message's own answer as the
  target (multiple-negatives ranking loss, Henderson et al. 2017, "Efficient Natural Language Response
  Suggestion for Smart Reply"; ``scale = 20`` as in sentence-transformers' ``MultipleNegativesRankingLoss``).
* ``cross_encoder`` (``model.head=sequence_classification``, one label): the logit of
  ``[CLS] message [SEP] answer [SEP]``; trained with softmax cross-entropy over the gold answer and the
  sampled negatives (as the ranking family's NRMS loss); at evaluation it reranks a first stage's top k.

Evaluation logs ``{stage}/recall@1``, ``recall@5``, ``mrr``, ``r10@1`` and ``intent_match@1``
(:mod:`~experiments.tasks.recommendation.answer_metrics`) over the whole answer pool of the split.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.errors import ConfigError
from experiments.evaluation import AnswerData, EvaluationResult
from experiments.models.pooling import mean_pool
from experiments.modules.base import EncoderModule
from experiments.tasks.recommendation.answer_metrics import ANSWER_METRICS, answer_selection_metrics, report

_SPLIT = {"val": "validation", "test": "test"}


class AnswerSelectionModule(EncoderModule):
    """See the module docstring.

    Args:
        *args, **kwargs: see :class:`EncoderModule`.
        architecture: ``bi_encoder`` or ``cross_encoder`` (must match ``data.architecture``).
        scale: inverse temperature of the bi-encoder's in-batch softmax over cosines.
    """

    data_protocol = AnswerData

    def __init__(self, *args: Any, architecture: str = "bi_encoder", scale: float = 20.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if architecture not in ("bi_encoder", "cross_encoder"):
            raise ConfigError(f"module.architecture must be bi_encoder or cross_encoder; got {architecture!r}")
        self.architecture = architecture
        self.scale = float(scale)
        self.hparams.update({"architecture": architecture, "scale": self.scale})
        self._rows: list[dict[str, Tensor]] = []
        self.results: dict[str, EvaluationResult] = {}

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        """L2-normalised mean-pooled embeddings ``[N, D]`` (float32) of a padded batch of texts."""
        hidden = self.model(**inputs).last_hidden_state.float()
        return F.normalize(mean_pool(hidden, inputs["attention_mask"]), dim=-1)

    def forward_loss(self, batch: dict[str, Any]) -> Tensor:
        if self.architecture == "bi_encoder":
            if "messages" not in batch:
                raise ConfigError("data.architecture and module.architecture disagree (bi_encoder module, "
                                  "cross_encoder batches)")
            m, a = self.embed(batch["messages"]), self.embed(batch["answers"])
            logits = self.scale * m @ a.T  # [B, B]; the diagonal holds each message's own answer
            return F.cross_entropy(logits, torch.arange(len(m), device=logits.device))
        if "pairs" not in batch:
            raise ConfigError("data.architecture and module.architecture disagree (cross_encoder module, "
                              "bi_encoder batches)")
        logits = self.model(**batch["pairs"]).logits[:, 0].float().view(batch["size"], batch["group"])
        return F.cross_entropy(logits, torch.zeros(batch["size"], dtype=torch.long, device=logits.device))

    def count_examples(self, batch: dict[str, Any]) -> int:
        return int(batch["size"])

    # ---- evaluation -------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self.architecture == "bi_encoder":
            return {"kind": batch["kind"].cpu(), "index": batch["index"].cpu(),
                    "vectors": self.embed(batch["inputs"]).cpu()}
        return {"message": batch["message"].cpu(), "answer": batch["answer"].cpu(),
                "scores": self.model(**batch["inputs"]).logits[:, 0].float().cpu()}

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        self._rows.append(self._score_batch(batch))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self._score_batch(batch)

    def reset_evaluation(self) -> None:
        self._rows = []

    def _gather(self, rows: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """All ranks' rows (DDP); each item is evaluated by exactly one rank."""
        from experiments.distributed import gather_rows

        return gather_rows(rows, self.trainer.world_size)

    def score_matrix(self, rows: list[dict[str, Tensor]], es: Any) -> dict[str, Any]:
        """The scores of an eval set from the scored rows.

        Bi-encoder: cosines of every message with every pool answer. Cross-encoder: the first stage's
        scores, with the reranked candidates moved above all others in the cross-encoder's order. When
        evaluation was cut short (``limit_*_batches``), only what was scored counts: messages whose gold
        answer (bi-encoder) or every candidate (cross-encoder) was scored, against the answers embedded.

        Returns:
            ``{"scores": [m, p], "gold": [m] indices into "pool", "r10": [m, 10] or None, "messages": the m
            message indices, "pool": the p pool indices}``.
        """
        m_all, p_all = len(es.messages), len(es.pool)
        predict = es.gold and es.gold[0] < 0
        if self.architecture == "bi_encoder":
            cat = (lambda k: torch.cat([r[k] for r in rows])) if rows else (lambda k: torch.zeros(0, dtype=torch.long))
            kinds, index = cat("kind"), cat("index")
            vectors = torch.cat([r["vectors"] for r in rows]) if rows else torch.zeros(0, 1)
            found = [dict(zip(index[kinds == k].tolist(), vectors[kinds == k], strict=True)) for k in (0, 1)]
            pool = sorted(found[0])
            where = {j: c for c, j in enumerate(pool)}
            messages = [i for i in sorted(found[1]) if predict or es.gold[i] in where]
            if not pool or not messages:
                return {"scores": np.zeros((0, len(pool))), "gold": [], "r10": None, "messages": [], "pool": pool}
            a = torch.stack([found[0][j] for j in pool])
            q = torch.stack([found[1][i] for i in messages])
            scores = (q @ a.T).double().numpy()
            gold = [where.get(es.gold[i], -1) for i in messages]
            r10 = None
            if not predict and all(es.r10[i] and all(j in where for j in es.r10[i]) for i in messages):
                cols = np.array([[where[es.gold[i]], *(where[j] for j in es.r10[i])] for i in messages])
                r10 = np.take_along_axis(scores, cols, axis=1)
            return {"scores": scores, "gold": gold, "r10": r10, "messages": messages, "pool": pool}
        pair: dict[tuple[int, int], float] = {}
        for r in rows:
            for i, j, v in zip(r["message"].tolist(), r["answer"].tolist(), r["scores"].tolist(), strict=True):
                pair[(i, j)] = v

        def wanted(i: int) -> list[int]:
            return es.candidates[i] + ([es.gold[i], *es.r10[i]] if es.r10[i] else [])

        messages = [i for i in range(m_all) if all((i, j) in pair for j in wanted(i))]
        scores = np.array(es.first_stage[messages], dtype=np.float64, copy=True)
        base = (float(scores.max()) if scores.size else 0.0) + 1.0
        cross = [pair[(i, j)] for i in messages for j in es.candidates[i]]
        low = min(cross) if cross else 0.0
        for row, i in enumerate(messages):
            for j in es.candidates[i]:  # above every first-stage score, in the cross-encoder's order
                scores[row, j] = base + (pair[(i, j)] - low)
        r10 = None
        if not predict and messages and all(es.r10[i] for i in messages):
            r10 = np.array([[pair[(i, es.gold[i])], *(pair[(i, j)] for j in es.r10[i])] for i in messages])
        gold = [es.gold[i] for i in messages]
        return {"scores": scores, "gold": gold, "r10": r10, "messages": messages, "pool": list(range(p_all))}

    def evaluation_epoch_end(self, stage: str) -> None:
        rows = self._gather(self._rows)
        self._rows = []
        es = self.data().eval_set(_SPLIT[stage])
        scored = self.score_matrix(rows, es)
        if not scored["messages"]:
            raise ConfigError(f"no {_SPLIT[stage]} message was fully scored (limit_{stage}_batches too small?)")
        metrics = answer_selection_metrics(
            scored["scores"], scored["gold"], pool_intents=[es.pool_intents[j] for j in scored["pool"]],
            message_intents=[es.messages[i].intent for i in scored["messages"]], r10_scores=scored["r10"])
        for key in ANSWER_METRICS:
            if key in metrics:
                self.log(f"{stage}/{key}", metrics[key], prog_bar=key == "mrr")
        self.log(f"{stage}/messages", float(metrics["messages"]))
        title = (f"{self.architecture}: {metrics['messages']} of {len(es.messages)} messages ranked against "
                 f"{metrics['pool']} of {len(es.pool)} pool answers (gold ranked last among ties)")
        self.results[stage] = EvaluationResult(stage, metrics, report=report(metrics, title), details={"scored": scored})
        if stage == "test" and self.trainer.is_global_zero:
            self.results[stage] = replace(self.results[stage],
                                          records=self.prediction_records(self.data(), "test"))

    # ---- outputs ----------------------------------------------------------------------------------
    def prediction_records(self, datamodule: Any, split: str, rows: list | None = None) -> list[dict]:
        """One dict per message: ``id``, ``message``, and ``answers``: the top ``data.top_k`` answers
        (``answer`` as written, placeholders kept; ``intent``; ``score``; ``pool_index``), best first;
        for test also ``gold_rank`` (1 = best) and ``intent``.

        ``rows`` are ``predict_step`` outputs (predict split); the test split uses the last test epoch.
        """
        from experiments.tasks.recommendation.answer_datamodule import _top
        from experiments.tasks.recommendation.answer_metrics import gold_ranks

        es = datamodule.eval_set(split)
        scored = self.score_matrix(rows or [], es) if split == "predict" else self.results["test"].details["scored"]
        scores, pool = scored["scores"], scored["pool"]
        k = min(datamodule.top_k, len(pool))
        ranks = gold_ranks(scores, scored["gold"]) if split != "predict" else None
        out = []
        for row, i in enumerate(scored["messages"]):
            msg = es.messages[i]
            rec: dict[str, Any] = {"id": msg.id, "message": msg.message}
            if ranks is not None:
                rec["intent"] = msg.intent
                rec["gold_rank"] = int(ranks[row])
            rec["answers"] = [{"answer": es.pool[pool[c]], "intent": es.pool_intents[pool[c]],
                               "score": round(float(scores[row, c]), 6), "pool_index": pool[c]}
                              for c in _top(scores[row], k)]
            out.append(rec)
        return out

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("architecture")
        if saved and saved != self.architecture:
            raise ConfigError(f"the checkpoint holds a {saved} model; run with data.architecture={saved}")
        super().on_load_checkpoint(checkpoint)
