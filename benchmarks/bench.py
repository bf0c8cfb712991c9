"""Training speed of our CLI against Hugging Face's Trainer and a bare PyTorch loop, measured in one run.

    python benchmarks/bench.py [--cases banking77_full conll_full ...] [--steps 20] [--warmup 5]
                               [--repeats 1] [--out outputs/bench]

For every case (a model, data, batch size and strategy) each runner trains for ``warmup + steps``
optimizer steps in its own process, on the same tokenized training examples (built by our datamodule,
so every runner sees the same texts, truncation and labels):

* ``ours``: ``python -m experiments <case overrides>`` with its default settings (callbacks, checkpoints,
  precision=auto, length-grouped dynamic padding), validation and test off, no export;
* ``hf_default``: ``transformers.Trainer`` as ``run_glue.py``/``run_ner.py`` run it by default (padding
  to ``max_length``, fp32, default sampler), saving and evaluation off;
* ``hf_tuned``: ``Trainer`` with dynamic padding, ``train_sampling_strategy="group_by_length"`` and the
  precision our ``auto`` picks on this machine, saving, evaluation and logging off; where that is bf16,
  ``hf_tuned_fp32`` runs the same Trainer in fp32 too, and the ratio ours/tuned is against the faster of
  the two (the Trainer's bf16 path can be slower than its fp32 one on a CPU where ours is faster in bf16);
* ``bare``: a plain loop: the same sampler and collator as ours, fused AdamW, linear warmup/decay,
  gradient clipping at 1.0, autocast when the precision is bf16.

The first ``warmup`` steps of every process are excluded; samples/s and non-pad tokens/s are over the
rest, and with ``--repeats`` > 1 the median over repeats is reported. On data of varied lengths a few
steps depend on which examples a sampler draws first (the Trainer's length-grouped sampler starts with
its longest batch and walks down a sorted megabatch); ``--steps epoch`` times one whole epoch after
the warm-up, the same examples for every runner. Model FLOP/s counts, per step,
``6 * N * B * S + 12 * L * H * B * S**2`` (N: non-embedding parameters, B x S: the padded batch,
L layers, H hidden size; the second term is attention scores and values, Kaplan et al. 2020), the
same formula for LoRA (an upper bound there: frozen weights get no weight gradient). MFU divides it by
the peak of a 2048x2048 matmul in the run's precision, measured in the same run. Peak RSS is the
process's own; time to first step is from process launch to the first training batch.

Results: printed, and ``<out>/results.json`` / ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CASES: dict[str, list[str]] = {
    "banking77_full": ["task=support_intent"],
    "banking77_lora": ["task=support_intent", "finetune=lora"],
    "conll_full": ["task=ner", "dataset=conll2003"],
    "conll_lora": ["task=ner", "dataset=conll2003", "finetune=lora"],
}
RUNNERS = ("ours", "hf_default", "hf_tuned", "hf_tuned_fp32", "bare")
FP32_RUNNERS = ("hf_default", "hf_tuned_fp32")  # every other runner trains in the precision auto picks
# Scaling cases: `synthetic_s<S>_b<B>`, sentence classification on generated texts that are all exactly S
# tokens long after truncation (no padding anywhere), at batch B.
SYNTHETIC = re.compile(r"synthetic_s(\d+)_b(\d+)")
WORDS = ("market price share bank loan rate growth report profit loss order account card payment refund "
         "delivery customer service support team product update change issue answer").split()


def case_overrides(name: str) -> list[str]:
    """The CLI overrides of case ``name`` (:data:`CASES`, or a ``synthetic_s<S>_b<B>`` scaling case).

    Raises:
        SystemExit: an unknown case name.
    """
    if name in CASES:
        return CASES[name]
    match = SYNTHETIC.fullmatch(name)
    if not match:
        raise SystemExit(f"unknown case {name!r}: one of {', '.join(CASES)} or synthetic_s<S>_b<B>")
    length, batch = int(match[1]), int(match[2])
    return ["task=text_classification", f"data.train_file={synthetic_table(length)}", f"data.max_length={length}",
            f"data.batch_size={batch}"]


def synthetic_table(length: int, rows: int = 2000) -> Path:
    """``outputs/bench/synthetic/s<length>.csv``: ``rows`` texts of ``length + 8`` one-token words (so each
    truncates to exactly ``length`` tokens with [CLS] and [SEP]) and 4 labels, seeded; written once."""
    path = ROOT / "outputs" / "bench" / "synthetic" / f"s{length}.csv"
    if not path.is_file():
        import csv
        import io

        from experiments import reporting

        rng = random.Random(length)
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            writer.writerow([" ".join(rng.choice(WORDS) for _ in range(length + 8)), f"c{rng.randrange(4)}"])
        reporting.write_text(path, text.getvalue())
    return path


# ------------------------------------------------------------------------------------------ shared
def compose(overrides: list[str]):
    """The app config for ``overrides`` (as the CLI composes it), Hydra state set, run dir in a temp folder."""
    import tempfile

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import experiments.__main__  # noqa: F401  (resolvers)
    from experiments.config import config_dir, prepare

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    out = tempfile.mkdtemp(prefix="bench-")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = out
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return prepare(cfg)


def train_features(cfg, overrides: list[str]) -> tuple[Any, list[dict], list[str], Any]:
    """(tokenizer, training features, labels) exactly as our datamodule builds them."""
    from hydra.utils import instantiate

    from experiments.models.build import load_tokenizer

    tok = load_tokenizer(cfg.model.name_or_path)
    dm = instantiate(cfg.data, tokenizer=tok, labels=None)
    dm.setup("fit")
    return tok, dm.features["train"], dm.labels, dm


def warmup_steps(cfg, total: int) -> int:
    """Linear-warmup steps of the references: ``ceil(module.warmup_ratio * total)``, as ours and HF Trainer take."""
    return math.ceil(float(cfg.module.warmup_ratio) * total)


def epoch_steps(case: str) -> int:
    """Batches in one epoch of ``case``'s training split (``ceil(N / batch_size)``)."""
    cfg = compose(case_overrides(case))
    return math.ceil(len(train_features(cfg, case_overrides(case))[1]) / int(cfg.data.batch_size))


def flops_per_step(config: Any, batch: int, seq: int) -> float:
    """``6 N B S + 12 L H B S^2`` (see the module docstring)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    n = layers * (4 * h * h + 2 * h * inter)
    return 6.0 * n * batch * seq + 12.0 * layers * h * batch * seq * seq


def matmul_peak(precision: str, seconds: float = 1.0) -> float:
    """FLOP/s of a 2048x2048 matmul in ``precision`` (best of repeated timings)."""
    import torch

    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ b
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
    return best


def our_precision() -> str:
    from experiments.config import auto_precision

    return auto_precision("cpu")[0]


def summarize(record: dict[str, Any], warmup: int, config: Any, launch: float) -> dict[str, Any]:
    steps = record["steps"]
    if len(steps) <= warmup + 1:
        raise SystemExit(f"only {len(steps)} steps recorded")
    measured = steps[warmup + 1:]
    elapsed = measured[-1]["end"] - steps[warmup]["end"]
    examples = sum(s["examples"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    flops = sum(flops_per_step(config, *s["padded"]) for s in measured)
    return {"samples_per_s": examples / elapsed, "tokens_per_s": tokens / elapsed, "flops_per_s": flops / elapsed,
            "peak_rss_mib": record["peak_rss_mib"], "first_step_s": record["first_step_start"] - launch,
            "steps_measured": len(measured), "pad_fraction": 1 - tokens / sum(a * b for a, b in
                                                                          (s["padded"] for s in measured))}


# ------------------------------------------------------------------------------------------ workers
def worker_ours(case: list[str], total: int, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "experiments", *case,
           # Validation off (it is not what is timed), so early stopping has nothing to watch.
           f"trainer.max_steps={total}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
           "callbacks.early_stopping=null",
           "data.test_file=null", "export.model=false", f"hydra.run.dir={out / 'run'}",
           "+callbacks.step_times._target_=experiments.throughput.StepTimes",
           f"+callbacks.step_times.path={out / 'steps.json'}", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _model(cfg, labels, dm):
    from hydra.utils import instantiate

    adapter = instantiate(cfg.finetune.adapter) if cfg.finetune.get("adapter") else None
    return instantiate(cfg.model)(labels=labels, adapter=adapter)


def worker_hf(case: list[str], total: int, out: Path, tuned: bool, precision: str) -> None:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from experiments.throughput import peak_rss_mib

    cfg = compose(case)
    tok, feats, labels, dm = train_features(cfg, case)
    model = _model(cfg, labels, dm)
    keep = ("input_ids", "attention_mask", "token_type_ids", "labels")
    data = [{k: v for k, v in f.items() if k in keep} for f in feats]
    ner = cfg.model.head == "token_classification"
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if tuned:
        base = (DataCollatorForTokenClassification(tok) if ner else DataCollatorWithPadding(tok))
    else:  # run_glue/run_ner default: pad_to_max_length
        length = int(cfg.data.max_length)
        base = (DataCollatorForTokenClassification(tok, padding="max_length", max_length=length) if ner
                else DataCollatorWithPadding(tok, padding="max_length", max_length=length))
    shapes: list[dict[str, Any]] = []

    def collate(rows):
        batch = base(rows)
        shapes.append({"examples": int(batch["input_ids"].shape[0]), "tokens": int(batch["attention_mask"].sum()),
                       "padded": list(batch["input_ids"].shape)})
        return batch

    record: dict[str, Any] = {"steps": [], "first_step_start": None}

    class Times(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if record["first_step_start"] is None:
                record["first_step_start"] = time.time()

        def on_step_end(self, args, state, control, **kw):
            record["steps"].append({"end": time.time(), **shapes[len(record["steps"])]})

    args = TrainingArguments(
        output_dir=str(out / "hf"), per_device_train_batch_size=int(cfg.data.batch_size), max_steps=total,
        learning_rate=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay),
        warmup_steps=warmup_steps(cfg, total), max_grad_norm=float(cfg.trainer.gradient_clip_val),
        bf16=precision.startswith("bf16"), use_cpu=True,
        save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        logging_strategy="no" if tuned else "steps", dataloader_num_workers=0, seed=int(cfg.seed),
        train_sampling_strategy="group_by_length" if tuned else "random",
    )
    torch.manual_seed(int(cfg.seed))
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Times()]).train()
    record["peak_rss_mib"] = peak_rss_mib()
    (out / "steps.json").write_text(json.dumps(record))


def worker_bare(case: list[str], total: int, out: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from experiments.modules.base import decay_groups, model_inputs
    from experiments.tasks.sampling import TrainSampler
    from experiments.throughput import peak_rss_mib

    cfg = compose(case)
    tok, feats, labels, dm = train_features(cfg, case)
    model = _model(cfg, labels, dm).train()
    torch.manual_seed(int(cfg.seed))
    bs = int(cfg.data.batch_size)
    sampler = TrainSampler([len(f["input_ids"]) for f in feats], bs, seed=int(cfg.seed))
    loader = DataLoader(feats, batch_size=bs, sampler=sampler, collate_fn=dm.collate)
    precision = our_precision()
    # The fastest plain AdamW: the fused kernel (under autocast, where we cannot clip its gradients
    # through Lightning, the loop still can: it clips by hand).
    opt = torch.optim.AdamW(decay_groups(model, float(cfg.optimizer.weight_decay)), lr=float(cfg.optimizer.lr),
                            fused=True)
    from transformers import get_scheduler

    sched = get_scheduler("linear", opt, num_warmup_steps=warmup_steps(cfg, total), num_training_steps=total)
    record: dict[str, Any] = {"steps": [], "first_step_start": time.time()}
    ner = cfg.model.head == "token_classification"
    step = 0
    while step < total:
        for batch in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
                logits = model(**model_inputs(batch)).logits
            if ner:
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                                         ignore_index=-100)
            else:
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.trainer.gradient_clip_val))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            record["steps"].append({"end": time.time(), "examples": int(batch["input_ids"].shape[0]),
                                    "tokens": int(batch["attention_mask"].sum()),
                                    "padded": list(batch["input_ids"].shape)})
            step += 1
            if step >= total:
                break
    record["peak_rss_mib"] = peak_rss_mib()
    (out / "steps.json").write_text(json.dumps(record))


# ------------------------------------------------------------------------------------------ driver
def run_one(case: str, runner: str, total: int, out: Path, extra: list[str]) -> tuple[dict[str, Any], float]:
    out.mkdir(parents=True, exist_ok=True)
    launch = time.time()
    cmd = [sys.executable, __file__, "--worker", runner, "--case", case, "--total", str(total), "--out", str(out),
           "--ours-overrides", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                   stdout=subprocess.DEVNULL, stderr=open(out / "stderr.txt", "w"))
    return json.loads((out / "steps.json").read_text()), launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["banking77_full", "banking77_lora", "conll_full", "conll_lora"])
    parser.add_argument("--runners", nargs="*", default=list(RUNNERS))
    parser.add_argument("--steps", default="20",
                        help="measured steps per run, or 'epoch': one epoch of the case's training split, so that "
                             "every runner times the same examples whatever order its sampler draws them in")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--worker", choices=RUNNERS)
    parser.add_argument("--case")
    parser.add_argument("--total", type=int)
    parser.add_argument("--ours-overrides", nargs="*", default=[],
                        help="extra overrides for our CLI only (to measure one lever against the default)")
    args = parser.parse_args()
    if args.worker:
        case, out = case_overrides(args.case), Path(args.out)
        if args.worker == "ours":
            worker_ours(case, args.total, out, args.ours_overrides)
        elif args.worker == "bare":
            worker_bare(case, args.total, out)
        else:
            worker_hf(case, args.total, out, tuned=args.worker.startswith("hf_tuned"),
                      precision="32" if args.worker in FP32_RUNNERS else our_precision())
        return

    from transformers import AutoConfig

    from experiments.models.build import embedded_model_dir

    config = AutoConfig.from_pretrained(embedded_model_dir())
    precision = our_precision()
    peaks = {p: matmul_peak(p) for p in {"32", precision}}
    out = ROOT / args.out
    results: dict[str, Any] = {"precision_auto": precision, "matmul_peak_flops": peaks, "cases": {},
                               "ours_overrides": args.ours_overrides, "steps": args.steps, "warmup": args.warmup,
                               "repeats": args.repeats}
    runners = [r for r in args.runners if not (r == "hf_tuned_fp32" and precision == "32")]  # same as hf_tuned
    for case in args.cases:
        results["cases"][case] = {}
        steps = epoch_steps(case) if args.steps == "epoch" else int(args.steps)
        runs: dict[str, list[dict[str, Any]]] = {runner: [] for runner in runners}
        for r in range(args.repeats):  # interleaved, so a slow moment of the machine hits every runner alike
            for runner in runners:
                record, launch = run_one(case, runner, args.warmup + steps + 1, out / case / f"{runner}_{r}",
                                         args.ours_overrides)
                runs[runner].append(summarize(record, args.warmup, config, launch))
        for runner in runners:
            med = {k: statistics.median(run[k] for run in runs[runner]) for k in runs[runner][0]}
            med["repeats"] = [round(run["samples_per_s"], 1) for run in runs[runner]]
            run_precision = "32" if runner in FP32_RUNNERS else precision
            med["mfu"] = med["flops_per_s"] / peaks[run_precision]
            med["precision"] = run_precision
            results["cases"][case][runner] = med
            print(f"{case:>16} {runner:>13}: {med['samples_per_s']:7.1f} samples/s {med['tokens_per_s']:8.0f} tok/s "
                  f"MFU {med['mfu']:.3f} RSS {med['peak_rss_mib']:.0f} MiB first step {med['first_step_s']:.1f} s "
                  f"(repeats {med['repeats']})", flush=True)
        row = results["cases"][case]
        tuned = [row[t] for t in ("hf_tuned", "hf_tuned_fp32") if t in row]
        refs = {"hf_tuned (the faster precision)": max(tuned, key=lambda m: m["samples_per_s"])} if tuned else {}
        refs.update({ref: row[ref] for ref in ("hf_default", "bare") if ref in row})
        for name, ref in refs.items():
            if "ours" in row:
                print(f"{case:>16} ours/{name}: {row['ours']['samples_per_s'] / ref['samples_per_s']:.2f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    lines = ["| case | runner | precision | samples/s | non-pad tokens/s | model TFLOP/s | MFU | padding | peak RSS MiB "
             "| launch to first step s | ours / runner |", "| --- " * 11 + "|"]
    for case, row in results["cases"].items():
        for runner, m in row.items():
            ratio = row["ours"]["samples_per_s"] / m["samples_per_s"] if "ours" in row else float("nan")
            lines.append(f"| {case} | {runner} | {m['precision']} | {m['samples_per_s']:.1f} | {m['tokens_per_s']:.0f} "
                         f"| {m['flops_per_s'] / 1e12:.3f} | {m['mfu']:.3f} | {m['pad_fraction']:.2f} "
                         f"| {m['peak_rss_mib']:.0f} | {m['first_step_s']:.1f} | {ratio:.2f} |")
    peaks = ", ".join(f"{p}: {v / 1e12:.2f} TFLOP/s" for p, v in results["matmul_peak_flops"].items())
    return "\n".join(lines) + f"\n\nmatmul peak (2048x2048, measured in the run): {peaks}\n"


if __name__ == "__main__":
    main()
