"""Popularity and random baselines on a MIND folder, scored with the same metrics as the models.

    python -m experiments.tasks.recommendation.baselines outputs/data/movielens_mind [--out baselines.json]

* ``popularity``: a candidate's score is the number of clicks it got in the training impressions
  (``train/behaviors.tsv``, clicked candidates only; histories are not counted). Items never clicked in
  training score 0 and tie (tie order as in ``metrics``: the later candidate first).
* ``random``: scores drawn uniformly, seeded (``--seed``); its expected AUC is 0.5.

Both are computed on every labelled split given (default dev and test) and written as JSON (``--out``) and
as a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.errors import ExperimentsError
from experiments.tasks.recommendation.metrics import METRICS, ranking_metrics
from experiments.tasks.recommendation.mind import Impression, read_split


def click_counts(impressions: Sequence[Impression]) -> Counter:
    """Clicks per news id over ``impressions`` (their clicked candidates)."""
    return Counter(n for imp in impressions for n in imp.positives)


def popularity_metrics(train: Sequence[Impression], impressions: Sequence[Impression]) -> dict[str, Any]:
    counts = click_counts(train)
    return ranking_metrics((imp.labels, [float(counts[c]) for c in imp.candidates]) for imp in impressions)


def random_metrics(impressions: Sequence[Impression], seed: int = 42) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return ranking_metrics((imp.labels, rng.random(len(imp.candidates)).tolist()) for imp in impressions)


def evaluate_baselines(mind_dir: str | Path, splits: Sequence[str] = ("dev", "test"),
                       seed: int = 42) -> dict[str, dict[str, dict[str, Any]]]:
    """``{split: {"popularity": metrics, "random": metrics}}`` for the labelled ``splits`` of ``mind_dir``.

    Raises:
        DataError: a malformed or missing MIND file.
    """
    mind_dir = Path(mind_dir)
    train = read_split(mind_dir / "train").impressions
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in splits:
        split = read_split(mind_dir / name)
        if not split.labelled:
            continue
        out[name] = {"popularity": popularity_metrics(train, split.impressions),
                     "random": random_metrics(split.impressions, seed)}
    return out


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A Markdown table: one row per (split, baseline)."""
    head = "| split | baseline | " + " | ".join(METRICS) + " | impressions | excluded |"
    rows = [head, "|" + " --- |" * (len(METRICS) + 4)]
    for split, by_name in results.items():
        for name, m in by_name.items():
            cells = " | ".join(f"{m[k]:.4f}" for k in METRICS)
            rows.append(f"| {split} | {name} | {cells} | {m['impressions']} | {m['excluded_impressions']} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tasks.recommendation.baselines",
                                     description="Popularity and random baselines on a MIND folder.")
    parser.add_argument("mind_dir", help="folder with train/ dev/ test/ (news.tsv + behaviors.tsv each)")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    try:
        results = evaluate_baselines(args.mind_dir, args.splits, args.seed)
    except ExperimentsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if args.out:
        from experiments import reporting

        reporting.write_json(args.out, results)
    print(table(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
