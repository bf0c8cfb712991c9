"""Run a W&B sweep file on this machine, without the W&B server: ``python -m experiments.sweep``.

Why: the same ``sweeps/*.yaml`` should drive ``wandb sweep`` + ``wandb agent`` online and a sweep on a
machine with no network. Suggestions come from W&B's own sweep engine (the ``sweeps`` package, which
the W&B server runs), so grid, random and Bayesian search propose what W&B would propose given the
same finished runs. Each trial is an ordinary run (``python -m experiments`` with the sweep's command,
the suggested parameters expanded by the same code as ``wandb agent``, in its own run dir).

Usage::

    python -m experiments.sweep sweeps/ner_bayes.yaml --count 20 [--dir DIR] [--seed 0] [-- overrides...]

``--count`` is the number of trials the sweep should have in total (finished or failed), so running
the same command again after an interruption only runs what is missing: finished trials are read
back from ``DIR/trials.jsonl`` and fed to the engine, a trial that was interrupted (its folder has
``trial.json`` but no record) is run again with the same parameters. At the end ``DIR/results.csv``
and ``DIR/results.md`` list the trials sorted by the sweep metric and name the best overrides.

The sweep metric is read from the trial's run dir: ``val_history.json`` (every validation, written by
the ``tracking`` callback), else ``csv/metrics.csv``, else ``metrics.json``; its best value over the run
(``goal``) is the trial's score, as W&B takes the extremum of a run's history. ``early_terminate``
(hyperband) needs runs reporting while they train and is applied by ``wandb agent`` only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from experiments import reporting
from experiments.errors import ConfigError
from experiments.history import HISTORY_FILE, number, read_history  # noqa: F401

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
RECORDS = "trials.jsonl"
TRIAL_FILE = "trial.json"
# sweeps 0.3 declares a pydantic v1 config key; pydantic 2 warns about it on import.
warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)


# ---- sweep file ----------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep config of a YAML file, validated against W&B's sweep schema (``sweeps.SweepConfig``).

    Raises:
        ConfigError: the file is missing, not a mapping, or violates the schema (all violations listed).
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"sweep file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping at the top")
    violations = validate(config)
    if violations:
        raise ConfigError(f"sweep file {path} violates the W&B sweep schema:\n  " + "\n  ".join(violations))
    return config


def validate(config: dict[str, Any]) -> list[str]:
    """Schema violations of a sweep config (empty when valid), as ``wandb sweep`` reports them."""
    from sweeps import SweepConfig, schema_violations_from_proposed_config

    try:
        violations = schema_violations_from_proposed_config(config)
        if not violations:
            SweepConfig(config)  # fills defaults and checks what the schema cannot express
    except Exception as err:  # noqa: BLE001  (jsonschema / ValueError: report, never crash)
        return [str(err)]
    if config.get("method") not in ("grid", "random", "bayes"):
        violations.append(f"method {config.get('method')!r}: experiments.sweep runs grid, random or bayes")
    if config.get("method") == "bayes" and "metric" not in config:
        violations.append("method bayes needs a metric")
    return violations


def command_args(params: dict[str, Any]) -> list[str]:
    """``key=value`` strings for a run's parameters, as ``wandb agent`` makes ``${args_no_hyphens}``."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": params})["args_no_hyphens"]


def expand_command(config: dict[str, Any], params: dict[str, Any], python: str = sys.executable) -> list[str]:
    """The argv ``wandb agent`` would run for ``params`` (``{name: {"value": v}}``), run by ``python``.

    Macros are expanded as the agent does (``${env}`` is dropped: the trial inherits this environment;
    ``${interpreter}`` and a literal ``python``/``python3`` right after it become ``python``).
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    template = create_sweep_command(list(config.get("command") or DEFAULT_COMMAND))
    variables = create_sweep_command_args({"args": params})
    variables.update(env=[], interpreter=[python], program=[str(config.get("program", ""))])
    argv: list[str] = []
    for item in template:
        item = str(item)
        if item.startswith("${") and item.endswith("}"):
            argv += [str(v) for v in variables.get(item[2:-1]) or []]
        else:
            argv.append(item)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = python
    return argv


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)


# ---- a run's scores -----------------------------------------------------------------------------------
# ---- trials --------------------------------------------------------------------------------------------
def read_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Finished trial records of a sweep dir (a torn last line, from a crash while writing, is skipped)."""
    path = sweep_dir / RECORDS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "trial" in rec:
            records.append(rec)
    return records


def append_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    """Add one record to ``trials.jsonl``: the whole file is rewritten to a temporary name and renamed,
    so a crash leaves either the old file or the new one, never half a line."""
    path = sweep_dir / RECORDS
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    reporting.write_text(path, old + json.dumps(record, sort_keys=True) + "\n")


def sweep_run(record: dict[str, Any], metric: str | None):
    """The ``sweeps.SweepRun`` the engine sees for a trial record."""
    from sweeps import RunState, SweepRun

    state = RunState.finished if record.get("state") == "finished" else RunState.failed
    history = [{metric: v} for v in record.get("history") or []] if metric else []
    return SweepRun(
        name=f"trial_{record['trial']}",
        state=state,
        config=record["config"],
        history=history,
        summary_metrics=record.get("summary") or {},
    )


def suggest(
    config: dict[str, Any], records: list[dict[str, Any]], seed: int, trial: int
) -> dict[str, Any] | None:
    """The engine's next parameters (``{name: {"value": v}}``), or None when a grid is exhausted.

    numpy and random are seeded with ``seed + trial`` first, so a sweep with the same seed and the same
    finished trials proposes the same next trial (and a resumed sweep continues as it would have).
    """
    import numpy as np
    from sweeps import next_run

    metric = (config.get("metric") or {}).get("name")
    np.random.seed((seed + trial) % 2**32)
    random.seed(seed + trial)
    run = next_run(config, [sweep_run(r, metric) for r in records], validate=True)
    return None if run is None else {k: {"value": v["value"]} for k, v in run.config.items()}


def score(record: dict[str, Any], goal: str) -> float | None:
    values = record.get("history") or []
    if not values:
        return None
    return min(values) if goal == "minimize" else max(values)


def run_trial(argv: list[str], trial_dir: Path, quiet: bool) -> tuple[int, float]:
    """Run one trial; returns (exit code, seconds). Output goes to ``trial_dir/trial.log`` when quiet."""
    start = time.perf_counter()
    if quiet:
        with (trial_dir / "trial.log").open("w") as fh:
            code = subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT)
    else:
        code = subprocess.call(argv)
    return code, round(time.perf_counter() - start, 2)


# ---- results table -------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_table(
    sweep_dir: Path, config: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Write ``results.csv`` and ``results.md`` (trials sorted by the metric, best first); returns the
    best record (None when no trial has a score)."""
    metric = config.get("metric") or {}
    name, goal = metric.get("name", ""), metric.get("goal", "maximize")
    params = sorted({k for r in records for k in r.get("config", {})})
    sign = 1.0 if goal == "minimize" else -1.0

    def key(r):
        s = r.get("score")
        return (s is None, sign * s if s is not None else 0.0, r["trial"])

    ranked = sorted(records, key=key)
    header = ["rank", "trial", name or "score", "state", *params, "seconds", "run_dir"]
    rows = []
    for rank, r in enumerate(ranked, 1):
        values = {k: v.get("value") for k, v in r.get("config", {}).items()}
        rows.append(
            [
                rank,
                r["trial"],
                r.get("score"),
                r.get("state"),
                *[values.get(p) for p in params],
                r.get("seconds"),
                r.get("run_dir"),
            ]
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    reporting.write_text(sweep_dir / "results.csv", buf.getvalue())

    best = ranked[0] if ranked and ranked[0].get("score") is not None else None
    lines = [
        f"# Sweep {config.get('name') or sweep_dir.name}",
        "",
        f"method: {config.get('method')}, metric: {name} ({goal}), trials: {len(records)}",
        "",
    ]
    if best is not None:
        lines += [
            f"Best: trial {best['trial']}, {name} = {best['score']:.6g}, overrides: "
            f"`{' '.join(best['overrides'])}`",
            "",
        ]
    lines.append("| " + " | ".join(map(str, header[:-1])) + " |")
    lines.append("|" + "---|" * (len(header) - 1))
    lines += ["| " + " | ".join(_fmt(v) for v in row[:-1]) + " |" for row in rows]
    reporting.write_text(sweep_dir / "results.md", "\n".join(lines) + "\n")
    return best


# ---- the sweep loop ------------------------------------------------------------------------------------
def run_sweep(
    sweep_file: str | Path,
    count: int | None = None,
    sweep_dir: str | Path | None = None,
    extra: Sequence[str] = (),
    seed: int = 0,
    quiet: bool = True,
    max_failures: int = 3,
) -> dict[str, Any]:
    """Run the sweep until it has ``count`` trials; returns ``{"records", "best", "dir", "ran"}``."""
    sweep_file = Path(sweep_file)
    config = load_sweep(sweep_file)
    method = config["method"]
    if config.get("run_cap"):
        count = min(count, int(config["run_cap"])) if count is not None else int(config["run_cap"])
    if count is None and method != "grid":
        raise ConfigError(f"method {method}: give --count (the number of trials)")
    sweep_dir = Path(sweep_dir or Path("outputs") / "sweeps" / _slug(sweep_file)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    reporting.write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(config, sort_keys=False))
    metric = (config.get("metric") or {}).get("name")
    goal = (config.get("metric") or {}).get("goal", "maximize")
    # W&B trials of one sweep share a group; the last logger= choice (sweep command, then extra) decides.
    choices = [
        str(c) for c in [*(config.get("command") or []), *extra] if re.match(r"^\+{0,2}logger=", str(c))
    ]
    uses_wandb = bool(choices) and "wandb" in choices[-1]
    group = config.get("name") or _slug(sweep_file)

    records = read_records(sweep_dir)
    done = {r["trial"] for r in records}
    # Trials whose folder exists without a record were interrupted: run them again, same parameters.
    pending = []
    for path in sorted(sweep_dir.glob(f"trial_*/{TRIAL_FILE}")):
        info = json.loads(path.read_text())
        if info["trial"] not in done:
            pending.append(info)
    ran, failures = 0, 0
    while count is None or len(records) < count:
        if pending:
            info = pending.pop(0)
            trial, params = info["trial"], info["config"]
            print(f"[sweep] trial {trial}: interrupted before, running it again", flush=True)
        else:
            trial = max([*done, *(p["trial"] for p in pending), -1]) + 1
            params = suggest(config, records, seed, trial)
            if params is None:
                print(f"[sweep] the {method} search has no more parameters to try", flush=True)
                break
        trial_dir = sweep_dir / f"trial_{trial:03d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        trial_dir.mkdir(parents=True)
        overrides = command_args(params)
        argv = expand_command(config, params) + [f"hydra.run.dir={trial_dir}"]
        if uses_wandb:
            argv.append(f"logger.wandb.group={group}")
        argv += list(extra)
        reporting.write_json(
            trial_dir / TRIAL_FILE, {"trial": trial, "config": params, "overrides": overrides, "argv": argv}
        )
        print(f"[sweep] trial {trial}: {' '.join(overrides)}", flush=True)
        code, seconds = run_trial(argv, trial_dir, quiet)
        history = read_history(trial_dir, metric) if metric else []
        summary = {}
        if (trial_dir / "metrics.json").is_file():
            summary = {
                k: v
                for k, v in json.loads((trial_dir / "metrics.json").read_text()).items()
                if isinstance(v, int | float)
            }
        record = {
            "trial": trial,
            "state": "finished" if code == 0 else "failed",
            "returncode": code,
            "config": params,
            "overrides": overrides,
            "metric": metric,
            "history": history,
            "summary": summary,
            "seconds": seconds,
            "run_dir": str(trial_dir),
        }
        record["score"] = score(record, goal)
        append_record(sweep_dir, record)
        records.append(record)
        done.add(trial)
        ran += 1
        shown = "n/a" if record["score"] is None else f"{record['score']:.4f}"
        print(f"[sweep] trial {trial}: {record['state']} in {seconds:.0f}s, {metric} = {shown}", flush=True)
        failures = failures + 1 if code != 0 else 0
        if failures >= max_failures:
            print(
                f"[sweep] {failures} trials failed in a row; stopping (see {trial_dir}/trial.log)", flush=True
            )
            break
    best = write_table(sweep_dir, config, records)
    if best is not None:
        print(
            f"[sweep] best: trial {best['trial']}, {metric} = {best['score']:.4f}: "
            f"{' '.join(best['overrides'])}"
        )
    print(f"[sweep] results in {sweep_dir / 'results.md'}")
    return {"records": records, "best": best, "dir": sweep_dir, "ran": ran}


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.config import parse_with_passthrough

    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description="Run a W&B sweep file locally (no W&B server): grid, random or Bayesian search with "
        "W&B's own engine. Overrides after -- are added to every trial.",
    )
    parser.add_argument("sweep_file", help="a W&B sweep YAML (sweeps/*.yaml)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="trials the sweep should have in total (default: the whole grid for method grid)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="sweep folder (default outputs/sweeps/<file name>); running again with the same folder resumes",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random and Bayesian suggestions")
    parser.add_argument("--max-failures", type=int, default=3, help="stop after this many failures in a row")
    parser.add_argument(
        "--verbose", action="store_true", help="show trial output (default: trial_*/trial.log)"
    )
    parser.add_argument("--validate", action="store_true", help="only validate the sweep file(s) and exit")
    args, extra = parse_with_passthrough(parser, argv)
    try:
        if args.validate:
            load_sweep(args.sweep_file)
            print(f"{args.sweep_file}: valid")
            return 0
        os.environ.setdefault("WANDB_SILENT", "true")
        result = run_sweep(
            args.sweep_file,
            args.count,
            args.dir,
            extra,
            seed=args.seed,
            quiet=not args.verbose,
            max_failures=args.max_failures,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0 if result["records"] and any(r["state"] == "finished" for r in result["records"]) else 1


if __name__ == "__main__":
    sys.exit(main())
