"""Token classification (NER): one module for every encoder, dataset and strategy.

Why word-level evaluation: the model predicts sub-tokens, but entity-level F1 (seqeval, strict IOB2,
as in the CoNLL-2003 shared task, Tjong Kim Sang & De Meulder 2003) is defined on words. Each word is
predicted from its first sub-token in the window that owns it (see ``tasks.ner.encoding``); words the
tokenizer dropped are predicted ``O`` so that no gold entity silently leaves the scores.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.modules.base import EncoderModule, model_inputs
from experiments.tasks.ner.metrics import entity_scores


class TokenClassificationModule(EncoderModule):
    """Fine-tunes ``AutoModelForTokenClassification``; logs ``{stage}/f1|precision|recall`` per epoch.

    Gold tags come from ``trainer.datamodule.gold_tags(stage)`` (list of word-level IOB2 tag lists,
    index = ``example_id``). After ``test`` the word-level predictions and the seqeval report are in
    ``self.results["test"]``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._records: list[Tensor] = []
        self.results: dict[str, dict[str, Any]] = {}

    def compute_loss(self, outputs: Any, batch: dict[str, Any]) -> Tensor:
        logits = outputs.logits
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def word_predictions(self, batch: dict[str, Any]) -> tuple[Tensor, Any]:
        """Forward pass; returns ``[n, 3]`` rows (example_id, word index, label id) and the outputs."""
        outputs = self.model(**model_inputs(batch))
        pred = outputs.logits.argmax(-1)  # [B, T]
        mask = batch["word_index"] >= 0
        example = batch["example_id"][:, None].expand_as(mask)
        rows = torch.stack([example[mask], batch["word_index"][mask], pred[mask]], dim=1)
        return rows, outputs

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        rows, outputs = self.word_predictions(batch)
        self._records.append(rows.cpu())
        if "labels" in batch:
            # Weighted by labelled tokens: the epoch value is the mean loss over all labelled tokens of
            # the split, whatever the batching and the number of DDP ranks (each holds a disjoint share).
            tokens = int((batch["labels"] != -100).sum())
            loss = self.compute_loss(outputs, batch) if tokens else outputs.logits.new_zeros(())
            self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=tokens, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.word_predictions(batch)[0].cpu()

    def on_validation_epoch_start(self):
        self._records = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self):
        self._epoch_end("val")

    def on_test_epoch_end(self):
        self._epoch_end("test")

    def decode(self, rows: list[Tensor], n_words: list[int]) -> list[list[str]]:
        """Word-level tag lists from prediction rows; words with no prediction get ``O``."""
        tags = [["O"] * n for n in n_words]
        if rows:
            for ex, w, p in torch.cat(rows).tolist():
                tags[ex][w] = self.labels[p]
        return tags

    def prediction_records(self, datamodule: Any, split: str, rows: list[Tensor] | None = None) -> list[dict]:
        """One JSON-able dict per sentence: ``words``, predicted ``tags`` and, for test, ``gold`` tags.

        ``rows`` are ``predict_step`` outputs (predict split); the test split uses the last test epoch.
        """
        words = datamodule.words(split)
        if split == "predict":
            tags = self.decode(rows or [], [len(w) for w in words])
            return [{"words": w, "tags": t} for w, t in zip(words, tags, strict=True)]
        res = self.results["test"]
        return [{"words": w, "gold": g, "tags": t} for w, g, t in zip(words, res["gold"], res["predictions"], strict=True)]

    def _gather(self, rows: list[Tensor]) -> list[Tensor]:
        """All ranks' rows (DDP); each word appears once per example so duplicates are harmless."""
        if self.trainer.world_size == 1:
            return rows
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(gathered, torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long))
        return [g for g in gathered if g.numel()]

    def _epoch_end(self, stage: str) -> None:
        split = {"val": "validation", "test": "test"}[stage]
        gold = self.trainer.datamodule.gold_tags(split)
        pred = self.decode(self._gather(self._records), [len(g) for g in gold])
        self._records = []
        scores = entity_scores(gold, pred)
        for key, value in scores["metrics"].items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "f1")
        self.results[stage] = {"predictions": pred, "gold": gold, **scores}
