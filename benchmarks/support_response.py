"""Answer selection on Bitext: BM25, the encoder without fine-tuning, the bi-encoder and the cross-encoder,
on the same seeded split, in one run.

    python benchmarks/support_response.py [--out outputs/support_response] [--epochs 2] [--cross-epochs 1]
                                          [--seed 42] [-- extra overrides for every model run]

Rows (every one scored by ``tasks.recommendation.answer_metrics`` against the test split's whole answer pool):

* ``BM25``: the lexical baseline of ``tasks.recommendation.answers`` (k1 = 1.2, b = 0.75), in this process;
* ``MiniLM, no fine-tuning``: ``task=support_response mode=test`` on the pretrained weights (cosine of
  mean-pooled embeddings, the bi-encoder's scoring);
* ``bi-encoder``: ``task=support_response`` trained ``--epochs`` epochs (in-batch negatives);
* ``cross-encoder over BM25`` and ``cross-encoder over bi-encoder``: ``answer_model=cross_encoder`` trained
  ``--cross-epochs`` epochs against ``--negatives`` random answers per message, reranking the top 10 of BM25;
  then the same checkpoint tested (``mode=test``) reranking the top 10 of the bi-encoder run; and a
  cross-encoder trained against answers of the message's own intent (``data.negatives_from=intent``, the
  hard negatives a reranker has to separate) reranking the bi-encoder's top 10 (validation: BM25's).

Each model run is a normal CLI run in its own folder under ``--out``; a folder whose ``metrics.json`` exists
is reused, so an interrupted run resumes. Writes ``<out>/results.json`` and prints a Markdown table with the
machine's CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("recall@1", "recall@5", "mrr", "r10@1", "intent_match@1")


def machine() -> str:
    """CPU model and flags, torch and transformers versions, as one line (``results.machine``)."""
    from results import machine as parts

    m = parts()
    return f"{m['cpu']}, flags {m['flags']}; torch {m['torch']}, transformers {m['transformers']}"


def cli(out: Path, overrides: list[str]) -> dict[str, Any]:
    """Run ``python -m experiments`` into ``out`` (skipped when ``out/metrics.json`` exists)."""
    done = out / "metrics.json"
    if not done.exists():
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "experiments", "task=support_response", f"hydra.run.dir={out}", *overrides]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        (out / "wall_time_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    metrics = json.loads(done.read_text())
    wall = out / "wall_time_s.txt"
    return {**{k: metrics.get(f"test/{k}") for k in KEYS}, "wall_s": float(wall.read_text()) if wall.exists() else None,
            "command": "python -m experiments task=support_response " + " ".join(overrides)}


def bm25_row(seed: int) -> dict[str, Any]:
    from experiments.config import resource_path
    from experiments.tasks.recommendation.answer_datamodule import AnswerSelectionDataModule
    from experiments.tasks.recommendation.answer_metrics import answer_selection_metrics
    from experiments.tasks.recommendation.answers import bm25_scores

    start = time.perf_counter()
    dm = AnswerSelectionDataModule(None, resource_path(
        "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"), split_seed=seed)
    es = dm.eval_set("test")
    scores = bm25_scores([m.message for m in es.messages], es.pool)
    r10 = [[scores[i, g], *(scores[i, j] for j in es.r10[i])] for i, g in enumerate(es.gold)]
    m = answer_selection_metrics(scores, es.gold, pool_intents=es.pool_intents,
                                 message_intents=[p.intent for p in es.messages], r10_scores=r10)
    return {**{k: m[k] for k in KEYS}, "wall_s": round(time.perf_counter() - start, 1),
            "command": "tasks.recommendation.answers.bm25_scores (in this script)", "messages": m["messages"],
            "pool": m["pool"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "support_response")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cross-epochs", type=int, default=1)
    parser.add_argument("--negatives", type=int, default=1, help="cross-encoder negatives per message")
    parser.add_argument("--seed", type=int, default=42)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    out = args.out.resolve()
    seed = [f"seed={args.seed}"]
    rows: dict[str, dict[str, Any]] = {"BM25": bm25_row(args.seed)}
    rows["MiniLM, no fine-tuning"] = cli(out / "untrained", ["mode=test", *seed, *extra])
    rows["bi-encoder"] = cli(out / "bi_encoder", [f"trainer.max_epochs={args.epochs}", *seed, *extra])
    cross = ["answer_model=cross_encoder", f"data.negatives={args.negatives}", *seed, *extra]
    rows["cross-encoder over BM25 top 10"] = cli(out / "cross_bm25", [*cross, f"trainer.max_epochs={args.cross_epochs}"])
    best = json.loads((out / "cross_bm25" / "metrics.json").read_text())["train/best_checkpoint"]
    rows["cross-encoder over bi-encoder top 10"] = cli(  # the same trained cross-encoder, another first stage
        out / "cross_bi", [*cross, "mode=test", f"ckpt_path={best}",
                           f"data.candidates_file={out / 'bi_encoder' / 'predictions.jsonl'}"])
    rows["cross-encoder, same-intent negatives, over bi-encoder top 10"] = cli(
        out / "cross_intent_bi", [*cross, "data.negatives_from=intent", f"trainer.max_epochs={args.cross_epochs}",
                                  f"data.candidates_file={out / 'bi_encoder' / 'predictions.jsonl'}"])
    result = {"machine": machine(), "seed": args.seed, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nMachine: {result['machine']}. Split: seed {args.seed}, Bitext test split "
          f"({rows['BM25']['messages']} messages, pool of {rows['BM25']['pool']} answers).\n")
    print("| model | recall@1 | recall@5 | MRR | R10@1 | intent-match@1 | wall time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        cells = " | ".join(f"{r[k]:.3f}" for k in KEYS)
        print(f"| {name} | {cells} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
