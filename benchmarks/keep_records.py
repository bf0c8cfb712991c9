"""Copy the small JSON records of benchmark runs from ``outputs/`` (not versioned) to ``benchmarks/records/``.

    python benchmarks/keep_records.py [PATTERN ...]

Why: the tables of ``docs/`` are regenerated from records (``fewshot.py --tables-only``, ``results.py
--tables-only``); kept in the repository, a later session can extend a table instead of rerunning it.
Only records are copied (results, per-step timings, per-run metrics), never checkpoints, models or logs.
PATTERN: globs under ``outputs/``; the default set below covers bench.py, fewshot.py, results.py and the
sweep-cost runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["bench/*/results.json", "bench/*/results.md", "bench/*/*/*_[0-9]/steps.json",
           "sweep_cost/sweep/trials.jsonl", "sweep_cost/sweep/results.md", "sweep_cost/single_*/metrics.json",
           "results/*/*/seed*/record.json", "fewshot*/*/majority.json", "fewshot*/*/k*/seed*/*.json"]

# fewshot.py's hand-over files to the setfit library's worker: the spec holds the dataset's texts (not ours to
# redistribute), the result is already in setfit_lib.json.
LEFT_OUT = ("_spec.json", "_result.json")


def main(patterns: list[str]) -> None:
    src, dst = ROOT / "outputs", ROOT / "benchmarks" / "records"
    copied = 0
    for pattern in patterns or DEFAULT:
        for path in sorted(src.glob(pattern)):
            if path.is_file() and not path.name.endswith(LEFT_OUT):
                target = dst / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
    print(f"{copied} records copied to {dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
