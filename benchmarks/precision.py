"""Training throughput of fp32 against bf16-mixed on the normal CLI path, measured in one run.

    python benchmarks/precision.py [--steps 40] [--experiment ner_conll2003_minilm] [extra overrides...]

Each precision runs the same experiment for ``--steps`` optimizer steps (no validation, no test, no
export) with Lightning's ThroughputMonitor; the first ``--warmup`` steps are excluded. Prints
samples/s and non-pad tokens/s per precision and the ratio bf16 / fp32.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def throughput(run_dir: Path, warmup: int) -> dict[str, float]:
    # One process logs train/device/...; several also log the global train/... rates.
    prefix = "train/device/"
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    rows = [r for r in rows if r.get(prefix + "samples_per_sec") and int(r["step"]) >= warmup]
    if not rows:
        raise SystemExit(f"no throughput rows in {run_dir}")
    last = rows[-1]
    return {"samples/s": float(last[prefix + "samples_per_sec"]), "tokens/s": float(last[prefix + "items_per_sec"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--experiment", default="ner_conll2003_minilm")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = {}
    for precision in ("32", "bf16-mixed"):
        run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{precision}-"))
        cmd = [
            sys.executable, "-m", "experiments", f"experiment={args.experiment}", f"trainer.precision={precision}",
            f"trainer.max_steps={args.steps}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=1", "callbacks.model_checkpoint=null", "callbacks.early_stopping=null",
            "callbacks.progress_bar=null", "data.test_file=null", "export.model=false", f"hydra.run.dir={run_dir}",
            "+callbacks.throughput._target_=lightning.pytorch.callbacks.ThroughputMonitor",
            "+callbacks.throughput.batch_size_fn._target_=hydra.utils.get_method",
            "+callbacks.throughput.batch_size_fn.path=experiments.throughput.batch_examples",
            "+callbacks.throughput.length_fn._target_=hydra.utils.get_method",
            "+callbacks.throughput.length_fn.path=experiments.throughput.batch_tokens",
            f"+callbacks.throughput.window_size={max(2, args.steps - args.warmup)}",
            *args.overrides,
        ]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        results[precision] = throughput(run_dir, args.warmup)
        print(f"{precision:>10}: {results[precision]['samples/s']:.1f} samples/s, "
              f"{results[precision]['tokens/s']:.0f} tokens/s  ({run_dir})")
    ratio = results["bf16-mixed"]["samples/s"] / results["32"]["samples/s"]
    print(f"bf16-mixed / fp32 samples/s ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
