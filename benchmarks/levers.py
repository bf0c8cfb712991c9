"""The cost of each per-step lever of docs/performance.md, timed in isolation in one process.

    python benchmarks/levers.py [--repeats 20]

On MiniLM-L6 with a token-classification head (22.6M parameters, all trainable) and random gradients:

* one AdamW step with ``foreach=True`` against ``fused=True`` (the same math, one kernel);
* the non-finite gradient check: one ``isfinite().all()`` per tensor, stacked (the old guard), against one
  fused ``torch._foreach_norm`` over all gradients (the current one);
* writing the resume state (weights + AdamW moments, as ``last.ckpt``) and the best checkpoint with
  weights only, to the run's disk, through the atomic writer (fsync included).

Medians over ``--repeats`` (3 for the checkpoint writes). End-to-end samples/s: ``benchmarks/bench.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from transformers import AutoModelForTokenClassification

    from experiments.models.build import embedded_model_dir
    from experiments.modules.base import decay_groups
    from experiments.reporting import atomic_write

    model = AutoModelForTokenClassification.from_pretrained(embedded_model_dir(), num_labels=9)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    rows = []
    for kernel in ("foreach", "fused"):
        opt = torch.optim.AdamW(decay_groups(model, 0.01), lr=1e-5, **{kernel: True})
        rows.append((f"AdamW step, {kernel}", median_time(opt.step, args.repeats)))
    grads = [p.grad for p in params]
    rows.append(("non-finite check, per tensor (old)",
                 median_time(lambda: bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()), args.repeats)))
    rows.append(("non-finite check, one fused norm (now)",
                 median_time(lambda: bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()), args.repeats)))
    opt = torch.optim.AdamW(decay_groups(model, 0.01), lr=1e-5, fused=True)
    opt.step()
    full = {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()]}
    weights = {"state_dict": model.state_dict()}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for name, obj in (("resume state (weights + AdamW moments)", full), ("best checkpoint, weights only", weights)):
            path = Path(tmp) / "x.ckpt"
            t = median_time(lambda obj=obj, path=path: atomic_write(path, lambda fh: torch.save(obj, fh)), 3)
            rows.append((f"write {name}, {path.stat().st_size / 2**20:.0f} MiB", t))
    print("| lever | median time (ms) |\n| --- | --- |")
    for name, t in rows:
        print(f"| {name} | {1000 * t:.1f} |")


if __name__ == "__main__":
    main()
