"""Answer selection DataModule: pairs in, bi-encoder or cross-encoder batches out, on the shared base.

Why on :class:`~experiments.tasks.base.FeaturesDataModule`: the training order then depends only on
``(seed, epoch)`` and the loader position is saved in checkpoints (exact resume), and evaluation reads
each example exactly once under DDP, as for NER and classification.

* ``bi_encoder`` training: a batch of ``B`` (message, answer) pairs; every other answer of the batch is a
  negative (in-batch negatives, the multiple-negatives ranking loss of Henderson et al. 2017).
* ``cross_encoder`` training: each message with its answer and ``negatives`` answers drawn from the
  training pool by ``RandomState([seed, epoch, example])`` (so a resumed epoch draws the same ones), as
  ``[CLS] message [SEP] answer [SEP]`` pairs.
* Evaluation (validation, test): the pool is the split's answers (duplicates merged). The bi-encoder
  embeds the pool and the messages once; the cross-encoder scores each message with the ``top_k``
  candidates of a first stage (BM25 over the pool, or the ranking a bi-encoder run wrote, via
  ``candidates_file``) and with the gold answer's R10@1 set (gold + 9 seeded negatives).
* Predict: messages of ``predict_file`` ranked against the answers of ``pool_file`` (default: every
  answer of ``train_file``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.errors import ConfigError, DataError
from experiments.tasks.base import STAGE_SPLITS, FeaturesDataModule
from experiments.tasks.recommendation.answers import Pair, bm25_scores, r10_negatives, read_pairs
from experiments.tasks.splits import stratified_split, write_split_ids

log = logging.getLogger(__name__)

ANSWER_ARCHITECTURES = ("bi_encoder", "cross_encoder")


@dataclass(frozen=True)
class EvalSet:
    """What evaluation of one split needs.

    Attributes:
        messages: the split's pairs (or predict messages), index = message index.
        pool: the candidate answers (unique texts), index = pool index.
        pool_intents: the intent each pool answer was written for.
        gold: each message's gold pool index (``-1`` for predict messages).
        r10: each message's 9 negative pool indices for R10@1 (empty lists when not scored).
        first_stage: ``[M, P]`` first-stage scores (BM25, or the candidates file's ranking) used by the
            cross-encoder for the candidates it does not rerank; ``None`` for the bi-encoder.
        candidates: each message's reranked pool indices (cross-encoder), else empty lists.
    """

    messages: list[Pair]
    pool: list[str]
    pool_intents: list[str]
    gold: list[int]
    r10: list[list[int]]
    first_stage: np.ndarray | None
    candidates: list[list[int]]


class AnswerSelectionDataModule(FeaturesDataModule):
    """Customer messages and their answers for ``task=support_response``.

    Args:
        tokenizer: fast tokenizer of the encoder.
        train_file, validation_file, test_file: tables of pairs (absolute paths); with only ``train_file``,
            validation and test are carved from it (seeded, stratified by intent).
        predict_file: a table of messages to answer.
        pool_file: answers ranked in predict mode (default ``train_file``: all its answers).
        architecture: ``bi_encoder`` or ``cross_encoder``.
        message_column, answer_column, intent_column, id_column: the table's columns.
        answer_max_length: sub-tokens per answer (bi-encoder) or per pair (cross-encoder).
        negatives: sampled negatives per message for cross-encoder training.
        negatives_from: ``pool`` (any other training answer) or ``intent`` (other answers of the message's
            intent, the hard negatives a reranker must tell apart; the whole pool when the intent has too few).
        top_k: candidates the cross-encoder reranks, and answers written per message in predictions.
        candidates_file: a bi-encoder run's ``predictions.jsonl`` on the same test split: its ranking is
            the cross-encoder's first stage on test (default, and always on validation and predict: BM25).
        r10_seed: seed of the R10@1 negatives.
        split_fractions, split_seed: carved splits; ids go to ``<output_dir>/split_ids.json``.
        output_dir: run folder (``None``: split ids not written).
        labels: ignored (predict mode passes the checkpoint's); the label list is always ``["score"]``.
        **batching: see ``FeaturesDataModule`` (``max_length`` is the message length).

    Raises:
        ConfigError: an unknown architecture, or no training file and no pool file in predict mode.
    """

    def __init__(self, tokenizer: Any, train_file: str | None = None, validation_file: str | None = None,
                 test_file: str | None = None, predict_file: str | None = None, *,
                 pool_file: str | None = None, architecture: str = "bi_encoder",
                 message_column: str = "instruction", answer_column: str = "response",
                 intent_column: str | None = "intent", id_column: str | None = None,
                 answer_max_length: int = 128, negatives: int = 3, negatives_from: str = "pool", top_k: int = 10,
                 candidates_file: str | None = None, r10_seed: int = 0,
                 split_fractions: tuple[float, ...] | list[float] = (0.8, 0.1, 0.1), split_seed: int = 42,
                 output_dir: str | None = None, labels: list[str] | None = None, **batching: Any):
        super().__init__(tokenizer, **batching)
        if architecture not in ANSWER_ARCHITECTURES:
            raise ConfigError(f"data.architecture must be one of {ANSWER_ARCHITECTURES}; got {architecture!r}")
        self.architecture = architecture
        self.columns = {"message_column": message_column, "answer_column": answer_column,
                        "intent_column": intent_column, "id_column": id_column}
        self.answer_max_length = int(answer_max_length)
        self.negatives = int(negatives)
        if negatives_from not in ("pool", "intent"):
            raise ConfigError(f"data.negatives_from must be pool or intent; got {negatives_from!r}")
        self.negatives_from = negatives_from
        self.top_k = int(top_k)
        self.candidates_file = candidates_file
        self.r10_seed = int(r10_seed)
        self.split_fractions = [float(f) for f in split_fractions]
        self.split_seed = int(split_seed)
        self.output_dir = output_dir
        self.carved = bool(train_file) and not validation_file and not test_file
        self.files = {"train": train_file, "validation": validation_file or (train_file if self.carved else None),
                      "test": test_file or (train_file if self.carved else None), "predict": predict_file}
        self.pool_file = pool_file or train_file
        self.pairs: dict[str, list[Pair]] = {}
        self.split_ids: dict[str, list[str]] = {}
        self.eval_sets: dict[str, EvalSet] = {}
        self._epoch = 0

    @property
    def labels(self) -> list[str]:
        """Always ``["score"]``: one relevance score per (message, answer)."""
        return ["score"]

    # ---- reading ----------------------------------------------------------------------------------
    def _read(self, split: str) -> list[Pair]:
        if split not in self.pairs:
            if split in ("train", "validation", "test") and self.carved:
                pairs = read_pairs(self.files["train"], **self.columns)
                parts = stratified_split([p.intent for p in pairs], self.split_fractions, seed=self.split_seed)
                for name, idx in zip(("train", "validation", "test"), parts, strict=True):
                    self.pairs[name] = [pairs[i] for i in idx]
                    self.split_ids[name] = [pairs[i].id for i in idx]
                if self.output_dir:
                    write_split_ids(Path(self.output_dir) / "split_ids.json", self.split_ids)
            elif split == "predict":
                self.pairs[split] = read_pairs(self.files[split], message_column=self.columns["message_column"],
                                               answer_column=None, intent_column=None)
            else:
                self.pairs[split] = read_pairs(self.files[split], **self.columns)
        return self.pairs[split]

    def _pool(self, pairs: list[Pair]) -> tuple[list[str], list[str], dict[str, int]]:
        pool: list[str] = []
        intents: list[str] = []
        index: dict[str, int] = {}
        for p in pairs:
            if p.answer not in index:
                index[p.answer] = len(pool)
                pool.append(p.answer)
                intents.append(p.intent)
        return pool, intents, index

    def eval_set(self, split: str) -> EvalSet:
        """The :class:`EvalSet` of ``split`` (``validation``, ``test`` or ``predict``), built on first use."""
        if split in self.eval_sets:
            return self.eval_sets[split]
        messages = self._read(split)
        if split == "predict":
            if not self.pool_file:
                raise ConfigError("mode=predict needs data.pool_file (or data.train_file): the answers to rank")
            pool, intents, _ = self._pool(read_pairs(self.pool_file, **self.columns))
            gold = [-1] * len(messages)
            r10: list[list[int]] = [[] for _ in messages]
        else:
            pool, intents, index = self._pool(messages)
            gold = [index[p.answer] for p in messages]
            r10 = r10_negatives(len(pool), gold, self.r10_seed) if len(pool) >= 10 else [[] for _ in messages]
        first, candidates = None, [[] for _ in messages]
        if self.architecture == "cross_encoder":
            first = self._first_stage(split, messages, pool)
            k = min(self.top_k, len(pool))
            candidates = [_top(row, k) for row in first]
        self.eval_sets[split] = EvalSet(messages, pool, intents, gold, r10, first, candidates)
        return self.eval_sets[split]

    def _first_stage(self, split: str, messages: list[Pair], pool: list[str]) -> np.ndarray:
        """BM25 scores ``[M, P]``; for the test split with ``candidates_file``, that file's ranked answers are
        put first, in its order (validation, which only picks the checkpoint, and predict keep BM25)."""
        scores = bm25_scores([m.message for m in messages], pool)
        if not self.candidates_file or split != "test":
            return scores
        path = Path(self.candidates_file)
        ranked: dict[str, list[str]] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    ranked[str(rec["id"])] = [a["answer"] for a in rec["answers"]]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(path, n, "expected a predictions.jsonl record of a bi-encoder run: "
                                    '{"id": ..., "answers": [{"answer": ...}, ...]}') from None
        index = {a: j for j, a in enumerate(pool)}
        missing = [m.id for m in messages if m.id not in ranked]
        if missing:
            raise DataError(path, None, f"no ranking for {len(missing)} {split} messages (first id {missing[0]!r}); "
                            f"expected a bi-encoder run's predictions on the same split (same seed and files)")
        top = float(scores.max()) + 1.0 if scores.size else 1.0
        for i, m in enumerate(messages):
            answers = [index[a] for a in ranked[m.id] if a in index]
            for r, j in enumerate(answers):  # ahead of every BM25 score, in the file's order
                scores[i, j] = top + len(answers) - r
        return scores

    # ---- features ---------------------------------------------------------------------------------
    def _ids(self, text: str, pair: str | None = None, max_length: int | None = None) -> dict[str, list[int]]:
        enc = self.tokenizer(text, pair, truncation="only_second" if pair is not None else True,
                             max_length=max_length or self.max_length)
        return {k: v for k, v in enc.items() if k in ("input_ids", "token_type_ids", "attention_mask")}

    def setup(self, stage: str | None = None) -> None:
        """Tokenize the splits that ``stage`` uses (see ``tasks.base.STAGE_SPLITS``)."""
        for split in STAGE_SPLITS.get(stage, tuple(self.files)):
            if not self.files[split] or split in self.features:
                continue
            if split == "train":
                pairs = self._read(split)
                self.train_pool = self._pool(pairs)[0]
                feats = []
                for i, p in enumerate(pairs):
                    f = {**self._ids(p.message), "example_id": i}
                    if self.architecture == "bi_encoder":
                        f["answer_ids"] = self._ids(p.answer, max_length=self.answer_max_length)["input_ids"]
                    feats.append(f)
                self.features[split] = feats
            else:
                self.features[split] = self._eval_features(split)
            log.info("%s: %d %s (%s)", split, len(self.features[split]),
                     "pairs" if split == "train" else "items", self.files[split])

    def _eval_features(self, split: str) -> list[dict]:
        es = self.eval_set(split)
        if self.architecture == "bi_encoder":
            # Messages and answers interleaved, so that an evaluation cut short still holds both.
            answers = [{**self._ids(a, max_length=self.answer_max_length), "kind": 0, "index": j}
                       for j, a in enumerate(es.pool)]
            messages = [{**self._ids(m.message), "kind": 1, "index": i} for i, m in enumerate(es.messages)]
            feats = []
            for t in range(max(len(answers), len(messages))):
                feats += messages[t:t + 1] + answers[t:t + 1]
            return feats
        feats = []
        for i, m in enumerate(es.messages):
            wanted = list(dict.fromkeys(es.candidates[i] + ([es.gold[i], *es.r10[i]] if es.r10[i] else [])))
            for j in wanted:
                feats.append({**self._ids(m.message, es.pool[j], self.answer_max_length), "message": i, "answer": j})
        return feats

    def _pad(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return self.tokenizer.pad(rows, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict]) -> dict[str, Any]:
        model_keys = ("input_ids", "token_type_ids", "attention_mask")
        first = features[0]
        if "example_id" in first and self.architecture == "bi_encoder":  # training, in-batch negatives
            return {"messages": self._pad([{k: f[k] for k in model_keys if k in f} for f in features]),
                    "answers": self._pad([{"input_ids": f["answer_ids"]} for f in features]),
                    "size": len(features)}
        if "example_id" in first:  # cross-encoder training: gold + sampled negatives per message
            epoch = self._epoch
            pairs = self._read("train")
            pool = self.train_pool
            index = {a: j for j, a in enumerate(pool)}
            if not hasattr(self, "_by_intent"):
                self._by_intent: dict[str, list[int]] = {}
                for q in pairs:
                    self._by_intent.setdefault(q.intent, []).append(index[q.answer])
                self._by_intent = {k: sorted(set(v)) for k, v in self._by_intent.items()}
            rows = []
            for f in features:
                p = pairs[f["example_id"]]
                gold = index[p.answer]
                rng = np.random.RandomState([self.seed, epoch, f["example_id"]])
                candidates = list(range(len(pool)))
                if self.negatives_from == "intent" and len(self._by_intent.get(p.intent, [])) > self.negatives:
                    candidates = self._by_intent[p.intent]
                drawn = [candidates[k] for k in rng.permutation(len(candidates))[: self.negatives + 1].tolist()]
                negs = [j for j in drawn if j != gold]
                for j in [gold, *negs[: self.negatives]]:
                    rows.append(self._ids(p.message, pool[j], self.answer_max_length))
            return {"pairs": self._pad(rows), "size": len(features), "group": self.negatives + 1}
        batch: dict[str, Any] = {"inputs": self._pad([{k: f[k] for k in model_keys if k in f} for f in features])}
        for key in ("kind", "index", "message", "answer"):
            if key in first:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        return batch

    def train_collate(self, items: list[tuple[dict, int]]) -> dict[str, Any]:
        self._epoch = int(items[0][1])  # the cross-encoder's negatives are drawn per (seed, epoch, example)
        return self.collate([f for f, _ in items])

    def hf_collator(self):  # the base class's hook; this module collates itself
        raise NotImplementedError


def _top(row: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first; ties: the lower index first (no sort kernel involved)."""
    order = sorted(range(len(row)), key=lambda j: (-float(row[j]), j))
    return order[:k]
