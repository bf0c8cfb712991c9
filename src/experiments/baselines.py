"""Pinned paper baselines: run an ``experiment=<name>`` once per seed, then compare with the paper.

Why: a published number is only worth comparing with a mean over seeds of a run whose every choice is
pinned in one file. Each ``conf/experiment/<name>.yaml`` that is a baseline carries a ``baseline`` node::

    baseline:
      published: 0.924              # the paper's number, same scale as our metric (fraction)
      metric: test/f1               # a key of metrics.json
      source: "Devlin et al. 2019 (BERT), Table 3 ..."
      note: ...                     # optional
      seeds: [1, 2, 3]

Usage (``make baselines BASELINE=<name>``)::

    python -m experiments.baselines <name> [<name> ...] [--seeds 1 2 3] [--out outputs/baselines]
                                    [--force] [--table-only] [-- extra overrides]

Seed ``s`` runs as a subprocess ``python -m experiments experiment=<name> seed=<s>`` in
``<out>/<name>/seed_<s>/``; a seed whose ``metrics.json`` already exists is not run again (``--force``
re-runs it). Then ``<out>/<name>/results.md`` and ``results.csv`` give our mean ± sample standard
deviation (n - 1), the published number, its source and the difference (ours - published).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import reporting
from experiments.errors import ConfigError

COLUMNS = ["baseline", "metric", "n", "mean", "std", "published", "difference", "source", "seeds", "values"]


def load_baseline(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``baseline`` node of ``experiment=<name>`` (composed as the entry point would compose it).

    Raises:
        ConfigError: no such experiment, or it has no complete ``baseline`` node.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from experiments.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={name}", *overrides])
    except HydraException as err:
        raise ConfigError(f"experiment={name}: {err}") from err
    finally:
        GlobalHydra.instance().clear()
    node = cfg.get("baseline")
    if node is None:
        raise ConfigError(f"experiment={name} has no `baseline:` node (published, metric, source, seeds)")
    baseline = OmegaConf.to_container(node, resolve=True)
    missing = [k for k in ("published", "metric", "source", "seeds") if baseline.get(k) in (None, "", [])]
    if missing:
        raise ConfigError(f"experiment={name}: baseline node lacks {', '.join(missing)}")
    baseline["name"] = name
    return baseline


def run_seed(name: str, seed: int, run_dir: Path, overrides: Sequence[str] = ()) -> int:
    """Run the experiment for one seed in ``run_dir`` (a subprocess); returns its exit code."""
    argv = [
        sys.executable,
        "-m",
        "experiments",
        f"experiment={name}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    print(f"[baselines] {name} seed {seed}: {' '.join(argv[1:])}", flush=True)
    return subprocess.call(argv)


def collect(name_dir: Path, metric: str, seeds: Sequence[int]) -> dict[int, float]:
    """``{seed: value}`` of ``metric`` from ``seed_<s>/metrics.json`` (seeds without one are left out)."""
    values = {}
    for seed in seeds:
        path = name_dir / f"seed_{seed}" / "metrics.json"
        if path.is_file():
            value = json.loads(path.read_text()).get(metric)
            if isinstance(value, int | float):
                values[seed] = float(value)
    return values


def summarize(baseline: dict[str, Any], values: dict[int, float]) -> dict[str, Any]:
    """One table row: mean, sample std (n - 1; None below two seeds), difference to the published number."""
    xs = [values[s] for s in sorted(values)]
    mean = statistics.fmean(xs) if xs else None
    std = statistics.stdev(xs) if len(xs) >= 2 else None
    published = float(baseline["published"])
    return {
        "baseline": baseline["name"],
        "metric": baseline["metric"],
        "n": len(xs),
        "mean": mean,
        "std": std,
        "published": published,
        "difference": None if mean is None else mean - published,
        "source": baseline["source"],
        "note": baseline.get("note") or "",
        "seeds": sorted(values),
        "values": xs,
    }


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def write_table(rows: Sequence[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.csv`` in ``out_dir``; returns their paths."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["baseline"],
                r["metric"],
                r["n"],
                "" if r["mean"] is None else repr(r["mean"]),
                "" if r["std"] is None else repr(r["std"]),
                r["published"],
                "" if r["difference"] is None else repr(r["difference"]),
                r["source"],
                " ".join(map(str, r["seeds"])),
                " ".join(repr(v) for v in r["values"]),
            ]
        )
    csv_path = reporting.write_text(out_dir / "results.csv", buf.getvalue())

    lines = [
        "| baseline | metric | seeds | ours (mean ± std) | published | difference | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = _f(r["mean"]) if r["std"] is None else f"{_f(r['mean'])} ± {_f(r['std'])}"
        lines.append(
            f"| {r['baseline']} | {r['metric']} | {r['n']} | {ours} | {r['published']:.4f} | "
            f"{_f(r['difference'], signed=True)} | {r['source']} |"
        )
    text = [
        "# Baselines",
        "",
        "Mean and sample standard deviation (n - 1) over seeds; difference = ours - published.",
        "",
        *lines,
        "",
        "Per seed:",
        "",
    ]
    for r in rows:
        seeds = ", ".join(f"seed {s}: {v:.4f}" for s, v in zip(r["seeds"], r["values"], strict=True))
        text.append(f"- {r['baseline']}: {seeds or 'no finished run'}")
    notes = [f"- {r['baseline']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        text += ["", "Notes:", "", *notes]
    text = "\n".join(text) + "\n"
    md_path = reporting.write_text(out_dir / "results.md", text)
    return md_path, csv_path


def run_baseline(
    name: str,
    out: Path,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    table_only: bool = False,
) -> tuple[dict[str, Any], list[int]]:
    """Run the missing seeds of one baseline and write its table; returns (row, failed seeds)."""
    baseline = load_baseline(name, overrides)
    seeds = [int(s) for s in (seeds or baseline["seeds"])]
    name_dir = out / name
    failed = []
    if not table_only:
        for seed in seeds:
            run_dir = name_dir / f"seed_{seed}"
            if (run_dir / "metrics.json").is_file() and not force:
                print(f"[baselines] {name} seed {seed}: done before ({run_dir}), not run again", flush=True)
                continue
            if run_seed(name, seed, run_dir, overrides) != 0:
                failed.append(seed)
    row = summarize(baseline, collect(name_dir, baseline["metric"], seeds))
    md_path, _ = write_table([row], name_dir)
    print(md_path.read_text(), flush=True)
    return row, failed


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.config import parse_with_passthrough

    parser = argparse.ArgumentParser(
        prog="python -m experiments.baselines",
        description="Run pinned paper baselines over seeds and compare with the paper. "
        "Overrides after -- go to every run.",
    )
    parser.add_argument("names", nargs="+", help="experiment config names (conf/experiment/<name>.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: baseline.seeds)")
    parser.add_argument(
        "--out", default="outputs/baselines", help="output folder (default outputs/baselines)"
    )
    parser.add_argument("--force", action="store_true", help="re-run seeds that already have metrics.json")
    parser.add_argument(
        "--table-only", action="store_true", help="only (re)write the tables from existing runs"
    )
    args, extra = parse_with_passthrough(parser, argv)
    out = Path(args.out).resolve()
    rows, failures = [], {}
    try:
        for name in args.names:
            row, failed = run_baseline(
                name, out, args.seeds, extra, force=args.force, table_only=args.table_only
            )
            rows.append(row)
            if failed:
                failures[name] = failed
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if len(rows) > 1:
        md_path, _ = write_table(rows, out)
        print(f"[baselines] summary of {len(rows)} baselines in {md_path}")
    for name, failed in failures.items():
        print(f"[baselines] {name}: seeds {failed} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
