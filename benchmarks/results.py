"""The results runner (``make results``): a queue of runs in one YAML, run one at a time, resumable, and the
tables of ``docs/results.md`` regenerated from what the runs recorded, never typed by hand.

    python benchmarks/results.py [--queue benchmarks/results.yaml] [--only TABLE ...] [--out outputs/results]
                                 [--docs docs/results.md] [--tables-only] [--plan]

For every table of the queue, every row (a strategy, a model...) and every seed, the run is
``python -m experiments <overrides> seed=<seed> hydra.run.dir=<out>/<table>/<row>/seed<seed>/run``. When
it ends, ``record.json`` beside the run folder records: the run's ``test/`` metrics, wall time, time per
epoch (fit time / epochs), peak RSS, trainable and total parameters, the command and the machine (CPU
model and flags, torch and transformers versions). A row whose ``record.json`` exists is not run again,
so an interrupted queue resumes where it stopped; a run whose command another table already recorded is
not trained twice (its record is copied, naming where from). ``--plan`` prints what would run and, from the records
already there, an estimate of the time left.

Each table is written into ``--docs`` between ``<!-- results:<table> -->`` and ``<!-- /results:<table> -->``
(appended at the end when the markers are missing): its protocol, the command, the machines, and one row
per queue row with the mean and sample standard deviation over seeds of each metric. A PNG (mean with
error bars of the table's first metric) goes to ``docs/img/<table>.png`` and is linked from the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUEUE = ROOT / "benchmarks" / "results.yaml"


def machine() -> dict[str, str]:
    """CPU model, its vector/matrix flags, cores, torch and transformers versions."""
    import torch
    import transformers

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = sorted(f for f in flags if f == "avx2" or f.startswith(("avx512", "amx")))
    return {"cpu": f"{model}, {os.cpu_count()} cores", "flags": " ".join(shown) or "no avx2/avx512/amx",
            "torch": torch.__version__, "transformers": transformers.__version__}


def load_queue(path: Path) -> dict[str, Any]:
    """The queue YAML: ``tables: {name: {title, protocol, metrics: [...], rows: {row: {overrides, seeds}}}}``.

    A row may name a pinned experiment (``baseline: <experiment>``): the table then shows that experiment's
    published number and our mean minus it, on the baseline's metric.

    Raises:
        SystemExit: the file is missing or a table lacks ``metrics`` or ``rows``.
    """
    from omegaconf import OmegaConf

    if not path.is_file():
        raise SystemExit(f"error: no queue file {path}")
    queue = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for name, table in (queue.get("tables") or {}).items():
        if not table.get("metrics") or not table.get("rows"):
            raise SystemExit(f"error: {path}: table {name!r} needs 'metrics' and 'rows'")
    return queue


def prepare(table: dict[str, Any]) -> None:
    """Run a table's ``prepare: {creates: path, command: [args of python]}`` once, when ``creates`` is missing.

    Paths are relative to the repository root, where the runs start (a data conversion, say).
    """
    spec = table.get("prepare")
    if not spec or (ROOT / spec["creates"]).exists():
        return
    cmd = [sys.executable, *map(str, spec["command"])]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    if not (ROOT / spec["creates"]).exists():
        raise SystemExit(f"error: the prepare step did not create {spec['creates']}")


def record_path(out: Path, table: str, row: str, seed: int) -> Path:
    return out / table / row / f"seed{seed}" / "record.json"


def same_run(out: Path, overrides: list[str], seed: int) -> dict[str, Any] | None:
    """A record of another table made by the same command (same overrides in any order, same seed), if any.

    A pinned baseline twin and a strategy row that is the experiment's default run are one run, not two.
    """
    want = sorted(overrides)
    for path in sorted(out.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        made = rec.get("overrides") or [a for a in rec["command"].split()[3:] if not a.startswith("seed=")]
        if rec.get("seed") == seed and sorted(made) == want and not rec.get("reused_from"):
            return rec
    return None


def run_one(out: Path, table: str, row: str, seed: int, overrides: list[str], env: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """Run one queue entry and write its ``record.json`` (atomically); returns the record.

    When another table already recorded the same command, its record is copied (``reused_from`` names it)
    instead of training again.
    """
    from experiments import reporting

    earlier = same_run(out, overrides, seed)
    if earlier is not None:
        record = {**earlier, "table": table, "row": row, "reused_from": f"{earlier['table']}/{earlier['row']}"}
        print(f"= {table}/{row} seed {seed}: the run of {record['reused_from']} (same command)", flush=True)
        reporting.write_json(record_path(out, table, row, seed), record)
        return record

    run_dir = record_path(out, table, row, seed).parent / "run"
    args = [*overrides, f"seed={seed}", f"hydra.run.dir={run_dir}"]
    cmd = [sys.executable, "-m", "experiments", *args]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    m = json.loads((run_dir / "metrics.json").read_text())
    epochs = m.get("train/epochs") or 0
    record = {
        "table": table, "row": row, "seed": seed, "command": "python -m experiments " + " ".join(args[:-1]),
        "overrides": list(overrides),
        "metrics": {k: v for k, v in m.items() if k.startswith("test/") and isinstance(v, int | float)},
        "wall_s": round(wall, 1), "fit_s": m.get("train/fit_time_s"),
        "epoch_s": round(m["train/fit_time_s"] / epochs, 1) if epochs and m.get("train/fit_time_s") else None,
        "peak_rss_mib": m.get("peak_rss_mib"), "trainable_params": m.get("train/trainable_params"),
        "total_params": m.get("train/total_params"), "machine": machine(),
    }
    reporting.write_json(record_path(out, table, row, seed), record)
    return record


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _count(n: int | None) -> str:
    return f"{n:,}" if isinstance(n, int) else "–"


def table_markdown(name: str, table: dict[str, Any], records: dict[str, list[dict]], image: str | None) -> str:
    """The Markdown of one table from its records (rows in queue order; rows without records say so)."""
    metrics = list(table["metrics"])
    lines = [f"<!-- results:{name} -->", f"### {table.get('title', name)}", ""]
    if table.get("protocol"):
        lines += [str(table["protocol"]).strip(), ""]
    machines = sorted({f"{r['machine']['cpu']} (flags: {r['machine']['flags']}; torch {r['machine']['torch']}, "
                       f"transformers {r['machine']['transformers']})" for rs in records.values() for r in rs})
    if machines:
        lines += ["Machine: " + "; ".join(machines) + ".", ""]
    from experiments.baselines import load_baseline  # the baseline: node (published, metric, source)

    baselines = {row: load_baseline(spec["baseline"]) for row, spec in table["rows"].items() if spec.get("baseline")}
    extra = ["published", "ours − published"] if baselines else []
    lines += ["| row | seeds | " + " | ".join(metrics + extra) + " | time per epoch (s) | wall (s) | peak RSS (MiB) | "
              "trainable params |", "| --- " * (len(metrics) + len(extra) + 6) + "|"]
    for row in table["rows"]:
        rs = sorted(records.get(row, []), key=lambda r: r["seed"])
        if not rs:
            lines.append(f"| {row} | not run yet | " + " | ".join("–" for _ in metrics + extra) + " | – | – | – | – |")
            continue
        cells = [_mean_std([r["metrics"][k] for r in rs if k in r["metrics"]]) for k in metrics]
        if extra:
            cells += _against(baselines.get(row), rs)
        epoch = [r["epoch_s"] for r in rs if r.get("epoch_s")]
        rss = [r["peak_rss_mib"] for r in rs if r.get("peak_rss_mib")]
        lines.append(f"| {row} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells)
                     + f" | {statistics.mean(epoch):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} | "
                     + (f"{max(rss):.0f}" if rss else "–") + f" | {_count(rs[0].get('trainable_params'))} |")
    if baselines:
        lines += ["", "Published numbers (the experiment's `baseline:` node): "
                  + "; ".join(f"{row}: {b['published']} {b['metric']}, {b['source']}" for row, b in baselines.items())
                  + "."]
    reused = sorted({f"{row} ← {r['reused_from']}" for row in table["rows"] for r in records.get(row, [])
                     if r.get("reused_from")})
    if reused:
        lines += ["", "Same command as another table's row, so the same run: " + ", ".join(reused) + "."]
    commands = [f"    {next(iter(sorted(records[row], key=lambda r: r['seed'])))['command']}"
                for row in table["rows"] if records.get(row)]
    if commands:
        lines += ["", "Commands (one seed each; the table's seeds differ only in `seed=`):", "", *commands]
    if image:
        lines += ["", f"![{name}]({image})"]
    lines += ["", f"<!-- /results:{name} -->"]
    return "\n".join(lines) + "\n"


def _against(baseline: dict[str, Any] | None, rs: list[dict]) -> list[str]:
    """The published number and our mean minus it, on the baseline's own metric (``–`` without one)."""
    if baseline is None:
        return ["–", "–"]
    ours = [r["metrics"][baseline["metric"]] for r in rs if baseline["metric"] in r["metrics"]]
    diff = f"{statistics.mean(ours) - float(baseline['published']):+.4f}" if ours else "–"
    return [f"{float(baseline['published']):.4f} ({baseline['metric']})", diff]


def plot(name: str, table: dict[str, Any], records: dict[str, list[dict]], path: Path) -> Path | None:
    """Mean with error bars (sample std) of the table's first metric per row, as a PNG (atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from experiments import reporting

    metric = table["metrics"][0]
    rows = [r for r in table["rows"] if any(metric in x["metrics"] for x in records.get(r, []))]
    if not rows:
        return None
    values = [[x["metrics"][metric] for x in records[r] if metric in x["metrics"]] for r in rows]
    means = [statistics.mean(v) if v else 0.0 for v in values]
    errs = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    fig = Figure(figsize=(1.2 * len(rows) + 2, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(rows, means, yerr=errs, capsize=4, color="tab:blue")
    ax.set_ylabel(metric)
    ax.set_title(table.get("title", name), fontsize=9)
    fig.tight_layout()
    return reporting.atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))


def write_docs(docs: Path, queue: dict[str, Any], out: Path, names: list[str]) -> None:
    """Regenerate the tables ``names`` in ``docs`` (and their PNGs in ``docs.parent / 'img'``)."""
    from experiments import reporting

    text = docs.read_text() if docs.is_file() else "# Results\n"
    for name in names:
        table = queue["tables"][name]
        records = {row: [json.loads(p.read_text()) for p in sorted((out / name / row).glob("seed*/record.json"))]
                   for row in table["rows"]}
        png = plot(name, table, records, docs.parent / "img" / f"{name}.png")
        block = table_markdown(name, table, records, f"img/{name}.png" if png else None)
        text = splice(text, name, block)
    reporting.write_text(docs, text)


def splice(text: str, name: str, block: str) -> str:
    """``text`` with the block between ``<!-- results:name -->`` and its end marker replaced (appended if absent)."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end) + 1
        return text[:a] + block + text[b:]
    return text.rstrip() + "\n\n" + block


def main(argv: list[str] | None = None) -> list[tuple[str, str, int]]:
    """Run the queue (or ``--only`` tables), then regenerate their tables; returns the runs made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=Path, default=DEFAULT_QUEUE)
    parser.add_argument("--only", nargs="+", help="tables to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--tables-only", action="store_true", help="regenerate the tables, run nothing")
    parser.add_argument("--plan", action="store_true", help="list the runs left and an estimate of their time")
    args = parser.parse_args(argv)
    queue = load_queue(args.queue)
    names = args.only or list(queue["tables"])
    unknown = [n for n in names if n not in queue["tables"]]
    if unknown:
        raise SystemExit(f"error: no table {unknown[0]!r} in {args.queue}; tables: {', '.join(queue['tables'])}")
    out = args.out.resolve()
    todo = [(n, row, int(seed), list(spec["overrides"])) for n in names
            for row, spec in queue["tables"][n]["rows"].items() for seed in spec["seeds"]
            if not record_path(out, n, row, int(seed)).is_file()]
    if args.plan:
        done = [json.loads(p.read_text()) for p in out.glob("*/*/seed*/record.json")]
        per_row = {(r["table"], r["row"]): r["wall_s"] for r in done}
        estimate = sum(per_row.get((n, row), 0.0) for n, row, _, _ in todo)
        unknown_rows = sorted({f"{n}/{row}" for n, row, _, _ in todo if (n, row) not in per_row})
        for n, row, seed, overrides in todo:
            earlier = same_run(out, overrides, seed)
            print(f"{n}/{row} seed {seed}: {' '.join(overrides)}"
                  + (f" (the run of {earlier['table']}/{earlier['row']}: nothing to train)" if earlier else ""))
        measured = any((n, row) in per_row for n, row, _, _ in todo)
        print(f"{len(todo)} runs left; "
              + (f"about {estimate / 60:.0f} min for the rows measured before" if measured else "no time estimate yet")
              + (f"; not measured yet: {', '.join(unknown_rows)}" if unknown_rows else ""))
        return []
    ran = []
    if not args.tables_only:
        for n, row, seed, overrides in todo:
            prepare(queue["tables"][n])
            if not run_one(out, n, row, seed, overrides).get("reused_from"):
                ran.append((n, row, seed))
    write_docs(args.docs, queue, out, names)
    print(f"tables written to {args.docs}")
    return ran


if __name__ == "__main__":
    main()
