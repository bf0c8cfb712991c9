"""Token classification (NER): one module for every encoder, dataset and strategy.

Why word-level evaluation: the model predicts sub-tokens, but entity-level F1 (conlleval, as in the
CoNLL-2003 shared task, Tjong Kim Sang & De Meulder 2003) is defined on words. Each word is scored from
its first sub-token in the window that owns it (see ``tasks.ner.encoding``), and the word-level
log-probabilities are decoded into tags by ``tasks.ner.decoding`` (Viterbi under IOB2's transitions by
default, or argmax). Words the tokenizer dropped are tagged ``O``, so no gold entity silently leaves the
scores. Only sentences whose every window was evaluated are scored (``trainer.limit_val_batches`` and
``limit_test_batches`` evaluate a prefix), so a partial evaluation never counts unseen sentences as misses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.evaluation import EvaluationResult, TokenClassificationData
from experiments.modules.base import EncoderModule, model_inputs
from experiments.tasks.ner.decoding import DECODERS, decode_words, entity_records
from experiments.tasks.ner.metrics import entity_scores, per_type_figure, protocol_table


class TokenClassificationModule(EncoderModule):
    """Fine-tunes ``AutoModelForTokenClassification``; logs ``{stage}/f1|precision|recall`` (conlleval-
    compatible) and ``{stage}/f1_strict|...`` (strict IOB2) per epoch.

    Args:
        *args, **kwargs: see :class:`EncoderModule`.
        decode: ``viterbi`` (valid IOB2 sequences, the default) or ``argmax`` (each word's best tag).

    Evaluation reads from the datamodule (:class:`~experiments.evaluation.TokenClassificationData`): ``gold_tags(split)`` (word-level IOB2 tags per sentence,
    index = ``example_id``), ``windows_per_example(split)``, ``unseen_types(split)`` and ``sentences_of(split)``.
    Each evaluation leaves an :class:`~experiments.evaluation.EvaluationResult` in ``self.results[stage]``
    (``details``: the decoded tags, the gold, the scored sentence indices and confidences).

    Raises:
        ConfigError: an unknown ``decode``.
    """

    data_protocol = TokenClassificationData

    def __init__(self, *args, decode: str = "viterbi", **kwargs):
        super().__init__(*args, **kwargs)
        if decode not in DECODERS:
            from experiments.errors import ConfigError

            raise ConfigError(f"module.decode must be one of {', '.join(DECODERS)}, got {decode!r}")
        self.decode_method = decode
        self.hparams.update({"decode": decode})
        self._records: list[dict[str, Tensor]] = []
        self.results: dict[str, EvaluationResult] = {}

    def compute_loss(self, outputs: Any, batch: dict[str, Any]) -> Tensor:
        logits = outputs.logits
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def word_predictions(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Any]:
        """Forward pass; returns the word-level rows of the batch and the model outputs.

        Rows: ``index`` ``[n, 2]`` (example_id, word index), ``scores`` ``[n, L]`` (log-probabilities,
        float32) for the n words owned by the batch's windows, and ``windows`` ``[B]`` (the example_id
        of each window, to tell which sentences were fully evaluated).
        """
        outputs = self.model(**model_inputs(batch))
        logp = outputs.logits.float().log_softmax(-1)  # [B, T, L]
        mask = batch["word_index"] >= 0
        example = batch["example_id"][:, None].expand_as(mask)
        rows = {
            "index": torch.stack([example[mask], batch["word_index"][mask]], dim=1).cpu(),
            "scores": logp[mask].cpu(),
            "windows": batch["example_id"].cpu(),
        }
        return rows, outputs

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        rows, outputs = self.word_predictions(batch)
        self._records.append(rows)
        if "labels" in batch:
            # Weighted by labelled tokens: the epoch value is the mean loss over all labelled tokens of
            # the split, whatever the batching and the number of DDP ranks (each holds a disjoint share).
            tokens = int((batch["labels"] != -100).sum())
            loss = self.compute_loss(outputs, batch) if tokens else outputs.logits.new_zeros(())
            self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=tokens, sync_dist=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.word_predictions(batch)[0]

    def reset_evaluation(self) -> None:
        self._records = []

    def decode(self, rows: list[dict[str, Tensor]], n_words: list[int],
               examples: list[int] | None = None, with_confidence: bool = False) -> Any:
        """Word-level tags of ``examples`` (default: all) from prediction rows, with ``self.decode_method``.

        Args:
            rows: ``word_predictions`` rows.
            n_words: words per example (index = example_id).
            examples: which examples to decode, in output order.
            with_confidence: also return each word's probability of its decoded tag (0 for a word
                without scores).

        Returns:
            The tag lists, or ``(tags, confidences)``.
        """
        examples = list(range(len(n_words))) if examples is None else examples
        offsets = torch.zeros(len(n_words) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(torch.as_tensor(n_words, dtype=torch.long), 0)
        flat = torch.full((int(offsets[-1]), len(self.labels)), float("nan"))
        for r in rows:
            if len(r["index"]):
                flat[offsets[r["index"][:, 0]] + r["index"][:, 1]] = r["scores"].float()
        scores = [flat[offsets[i]:offsets[i + 1]] for i in examples]
        tags = decode_words(scores, self.labels, self.decode_method)
        if with_confidence:
            index = {lab: i for i, lab in enumerate(self.labels)}
            conf = []
            for s, ts in zip(scores, tags, strict=True):
                ids = torch.tensor([index[t] for t in ts], dtype=torch.long)[:, None]
                conf.append(torch.nan_to_num(s.gather(1, ids).squeeze(1).exp(), nan=0.0).tolist())
            return tags, conf
        return tags

    @staticmethod
    def evaluated_examples(rows: list[dict[str, Tensor]], windows_per_example: list[int]) -> list[int]:
        """Ids of the examples all of whose windows are in ``rows``, ascending."""
        seen = torch.zeros(len(windows_per_example), dtype=torch.long)
        for r in rows:
            seen.index_add_(0, r["windows"], torch.ones_like(r["windows"]))
        total = torch.as_tensor(windows_per_example, dtype=torch.long)
        return torch.nonzero(seen >= total).flatten().tolist()

    def prediction_records(self, datamodule: Any, split: str, rows: list[dict] | None = None) -> list[dict]:
        """One JSON-able dict per sentence: ``id`` (the record's id in a span file, else its index in the
        file), ``words``, predicted ``tags``, ``entities`` (:func:`~experiments.tasks.ner.decoding.entity_records`:
        text, type, word and character offsets, confidence; character offsets of the raw ``text`` for span
        files, which also get ``text``) and, for test, ``gold`` tags (only the sentences that were scored).

        ``rows`` are ``predict_step`` outputs (predict split); the test split uses the last test epoch.
        """
        sentences = datamodule.sentences_of(split)

        def record(i: int, tags: list[str], conf: list[float], gold: list[str] | None = None) -> dict:
            s = sentences[i]
            rec: dict[str, Any] = {"id": s.id if s.id is not None else i}
            if s.text is not None:
                rec["text"] = s.text
            rec["words"] = s.words
            if gold is not None:
                rec["gold"] = gold
            rec["tags"] = tags
            rec["entities"] = entity_records(s.words, tags, conf, text=s.text, offsets=s.offsets)
            return rec

        if split == "predict":
            tags, conf = self.decode(rows or [], [len(s.words) for s in sentences], with_confidence=True)
            return [record(i, t, c) for i, (t, c) in enumerate(zip(tags, conf, strict=True))]
        res = self.results["test"].details
        return [record(i, t, c, g) for i, g, t, c in zip(res["examples"], res["gold"], res["predictions"],
                                                           res["confidences"], strict=True)]

    def _gather(self, rows: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """All ranks' rows (DDP); each item is evaluated by exactly one rank."""
        from experiments.distributed import gather_rows

        return gather_rows(rows, self.trainer.world_size)

    def evaluation_epoch_end(self, stage: str) -> None:
        split = {"val": "validation", "test": "test"}[stage]
        dm = self.data()
        rows = self._gather(self._records)
        self._records = []
        all_gold = dm.gold_tags(split)
        examples = self.evaluated_examples(rows, dm.windows_per_example(split))
        gold = [all_gold[i] for i in examples]
        n_words = [len(g) for g in all_gold]
        if stage == "test":  # confidences go to predictions.jsonl, written for test only
            pred, confidences = self.decode(rows, n_words, examples, with_confidence=True)
        else:
            pred, confidences = self.decode(rows, n_words, examples), None
        scores = entity_scores(gold, pred, unseen_types=dm.unseen_types(split))
        for key, value in scores["metrics"].items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "f1")
        details = {"predictions": pred, "confidences": confidences, "gold": gold, "examples": examples,
                   "sentences": len(all_gold), "protocols": scores["protocols"]}
        self.results[stage] = EvaluationResult(stage, scores["metrics"], report=scores["report"],
                                               table=protocol_table(scores["protocols"]), details=details)
        if stage == "test" and self.trainer.is_global_zero:
            figure = per_type_figure(scores["metrics"])
            self.results[stage] = replace(self.results[stage], records=self.prediction_records(dm, "test"),
                                          figures={"f1_per_type.png": figure} if figure is not None else {})
