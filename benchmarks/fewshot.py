"""Few-shot sentence classification: the ``setfit`` library against our recipes, on the same K-shot draws
with the same MiniLM body, in one run.

    python benchmarks/fewshot.py [--datasets phrasebank banking77] [--k 8 16] [--seeds 1 2 3]
                                 [--methods setfit_lib setfit full full_eda] [--out outputs/fewshot]
                                 [--docs docs/results.md] [--tables-only]

For every (dataset, K, seed) the training set is ``data.k_shot=K data.k_shot_seed=seed``: exactly K examples
per class drawn by our sampler (``experiments.tasks.kshot``), the same ids for every method; the test split
is the dataset's own (PhraseBank: the pinned 20% carved by split_seed 42; banking77: the official 3,080
texts). No development set and fixed hyper-parameters (the SetFit protocol): ``trainer.limit_val_batches=0``,
the last epoch is tested. Methods:

* ``setfit_lib``: ``setfit.Trainer`` (the library, its defaults: logistic-regression head, cosine-similarity
  loss, mean pooling of all-MiniLM-L6-v2's own modules) with ``num_iterations`` 20 (banking77: 5, a cut
  for CPU time: its 77 classes make 2 * 20 * 616 = 24,640 pairs at K=8), 1 epoch, batch 16, body lr 2e-5,
  ``seed``; in its own process, like ours, on the same texts; predicts the test texts.
* ``setfit``: ``finetune=setfit`` (the same recipe through our training step), truncating at 256 tokens
  like the library's body (sentence-transformers' ``max_seq_length``), not at the experiment's
  ``data.max_length``.
* ``setfit_shuffle``: ``setfit`` with ``data.group_by_length=false``: the pair batches in a uniform
  shuffle, as the library's sampler draws them, instead of length-grouped mega-batches (each trained
  longest pair first).
* ``setfit_seed42``: ``setfit`` with ``seed=42`` (the K-shot draw stays ``k_shot_seed``): the pair shuffle
  of the library, which is always 42, on every draw; batch order and dropout masks from 42 as well.
  ``setfit_seed43``: the same with 43, another pair structure fixed across draws.
* ``setfit_nodrop``: ``setfit`` with every dropout of the encoder off (``+model.hidden_dropout_prob=0.0
  +model.attention_probs_dropout_prob=0.0``; the library trains with MiniLM's 0.1 for both).
* ``full``: ``finetune=full``, 20 epochs, batch 8, lr 1e-4 (fixed, not tuned).
* ``<method>_eda`` (``setfit``, ``full``, ``lora``, ``prompt_tuning``): the method with ``augment=eda``
  (random swap and deletion, 0.1 each, Wei & Zou 2019; SetFit: each side of each pair its own variant).
* ``lora``: ``finetune=lora`` (r 8), lr 5e-4; ``prompt_tuning``: ``finetune=prompt_tuning`` (20 virtual
  tokens), lr 1e-2; otherwise as ``full``.
* NER (``conll``, K mentions per entity type): ``ner_full`` (as ``full``) and ``ner_mention`` (with
  ``augment=ner``, mention replacement, Dai & Adel 2020); scored by entity-level F1.

Beside them: the majority class of the full training split, and our full-data score where
``make results`` recorded it. Each run's record (accuracy, macro-F1, wall time from process launch to exit)
is ``<out>/<dataset>/k<K>/seed<seed>/<method>.json``; finished runs are skipped, so the run resumes. The
table (mean ± sample std over seeds) replaces the ``fewshot`` block of ``docs/results.md`` (``--block``
another, for the records of another ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

DATASETS: dict[str, list[str]] = {
    "phrasebank": ["experiment=sentiment_phrasebank100_minilm"],
    "banking77": ["experiment=intent_banking77_minilm"],
    "conll": ["experiment=ner_conll2003_minilm"],
}
# SetFit's pairs grow with the number of examples: 2 * num_iterations * N. banking77 at K=8 is 616 examples,
# 24,640 pairs at the paper's 20 (4x the pairs of a 200 s run at 5, per implementation): cut to 5 there,
# for the library and ours alike.
ITERATIONS = {"phrasebank": 20, "banking77": 5}
NER = {"conll"}  # K counts mentions per entity type; entity-level F1; only the NER methods apply
METRIC = {"phrasebank": "test/accuracy", "banking77": "test/accuracy", "conll": "test/f1"}
# The full-data score of each dataset, from `make results` (benchmarks/results.yaml), when recorded: the
# pinned experiments' own runs (the strategy tables of banking77 and CoNLL train fewer epochs).
FULL_DATA = {"phrasebank": ("baselines_minilm", "sentiment_phrasebank100_minilm"),
             "banking77": ("baselines_minilm", "intent_banking77_minilm"),
             "conll": ("baselines_minilm", "ner_conll2003_minilm")}
COMMON = ["trainer.limit_val_batches=0", "export.model=false", "trainer.precision=32"]
# Fixed, not tuned: every fine-tuning method trains 20 epochs at batch 8 with 10% warmup.
FIXED = ["trainer.max_epochs=20", "data.batch_size=8", "module.warmup_ratio=0.1"]
METHODS: dict[str, list[str]] = {
    "setfit": ["finetune=setfit", "trainer.max_epochs=1", "data.batch_size=16", "optimizer.lr=2.0e-5",
               "module.warmup_ratio=0.1", "data.max_length=256"],  # + num_iterations of ITERATIONS
    "full": ["finetune=full", *FIXED, "optimizer.lr=1.0e-4"],
    "lora": ["finetune=lora", *FIXED, "optimizer.lr=5.0e-4"],
    "prompt_tuning": ["finetune=prompt_tuning", *FIXED, "optimizer.lr=1.0e-2"],
    # NER (K mentions per type, Yang & Katiyar 2020): full fine-tuning without and with mention replacement.
    "ner_full": ["finetune=full", *FIXED, "optimizer.lr=1.0e-4"],
    "ner_mention": ["finetune=full", *FIXED, "optimizer.lr=1.0e-4", "augment=ner"],
}
METHODS["setfit_shuffle"] = [*METHODS["setfit"], "data.group_by_length=false"]
# The library shuffles its pairs with seed 42 on every draw (setfit.sampler.shuffle_combinations), so with one
# training-set size it picks the same pairs of example indices on every draw; ours with the run's seed.
METHODS["setfit_seed42"] = [*METHODS["setfit"], "seed=42"]
METHODS["setfit_seed43"] = [*METHODS["setfit"], "seed=43"]  # another fixed seed: is 42 itself the lucky one?
METHODS["setfit_nodrop"] = [*METHODS["setfit"], "+model.hidden_dropout_prob=0.0", "+model.attention_probs_dropout_prob=0.0"]
# Each sentence recipe again with EDA on (swap 0.1, delete 0.1; SetFit: a variant per side of each pair).
METHODS.update({f"{m}_eda": [*METHODS[m], "augment=eda"] for m in ("setfit", "full", "lora", "prompt_tuning")})
ALL_METHODS = ("setfit_lib", *METHODS)


def applies(dataset: str, method: str) -> bool:
    """NER datasets take the ``ner_*`` methods; sentence datasets every other one."""
    return (dataset in NER) == method.startswith("ner_")


def kshot_overrides(dataset: str, k: int, seed: int) -> list[str]:
    return [*DATASETS[dataset], f"data.k_shot={k}", f"data.k_shot_seed={seed}", f"seed={seed}", *COMMON]


def datamodule(overrides: list[str]) -> tuple[Any, Any]:
    """(config, datamodule set up for fit and test) exactly as the CLI composes them for ``overrides``."""
    from bench import compose, train_features

    cfg = compose(overrides)
    dm = train_features(cfg, overrides)[3]
    dm.setup("test")
    return cfg, dm


def split_texts(dataset: str, k: int, seed: int) -> dict[str, Any]:
    """The K-shot training texts and the test texts with labels, as our datamodule reads them."""
    cfg, dm = datamodule(kshot_overrides(dataset, k, seed))
    labels = dm.labels
    return {"labels": labels,
            "train": [(e.text, labels.index(e.label)) for e in dm.examples["train"]],
            "test": [(e.text, labels.index(e.label)) for e in dm.examples["test"]],
            "model": str(cfg.model.name_or_path)}


def majority_accuracy(dataset: str) -> float:
    """Test accuracy of always predicting the most frequent class of the whole training split."""
    from collections import Counter

    _, dm = datamodule([*DATASETS[dataset], *COMMON])
    top = Counter(e.label for e in dm.examples["train"]).most_common(1)[0][0]
    return sum(e.label == top for e in dm.examples["test"]) / len(dm.examples["test"])


def train_setfit_lib(spec: dict[str, Any], seed: int, checkpoints: Path) -> tuple[Any, list[int]]:
    """The library's run of this benchmark: ``setfit.Trainer`` with its defaults and the fixed settings
    above (batch 16, 1 epoch, body lr 2e-5, ``spec["num_iterations"]``) on ``spec["train"]`` (text, label)
    pairs; returns the trained ``SetFitModel`` and its predicted label ids for ``spec["test"]``."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(spec["model"])
    args = TrainingArguments(batch_size=16, num_epochs=1, num_iterations=spec["num_iterations"], body_learning_rate=2e-5,
                             seed=seed, save_strategy="no", report_to="none", output_dir=str(checkpoints),
                             show_progress_bar=False)
    train = Dataset.from_dict({"text": [t for t, _ in spec["train"]], "label": [y for _, y in spec["train"]]})
    Trainer(model=model, args=args, train_dataset=train).train()
    return model, [int(p) for p in model.predict([t for t, _ in spec["test"]], batch_size=64, as_numpy=True)]


def setfit_lib_worker(spec_path: Path, result_path: Path) -> None:
    """Train and evaluate the setfit library on the texts of ``spec_path``; write accuracy and macro-F1."""
    from sklearn.metrics import accuracy_score, f1_score

    spec = json.loads(spec_path.read_text())
    _, pred = train_setfit_lib(spec, spec["seed"], result_path.parent / "setfit_lib_checkpoints")
    gold = [y for _, y in spec["test"]]
    result_path.write_text(json.dumps({"test/accuracy": accuracy_score(gold, pred),
                                       "test/f1_macro": f1_score(gold, pred, average="macro")}))


def run_setfit_lib(folder: Path, dataset: str, k: int, seed: int) -> dict[str, Any]:
    spec = {**split_texts(dataset, k, seed), "seed": seed, "num_iterations": ITERATIONS.get(dataset, 20)}
    spec_path, result = folder / "setfit_lib_spec.json", folder / "setfit_lib_result.json"
    spec_path.write_text(json.dumps(spec))
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--setfit-lib-worker", str(spec_path), str(result)], check=True,
                   cwd=ROOT)
    wall = time.perf_counter() - start
    return {"metrics": json.loads(result.read_text()), "wall_s": round(wall, 1), "train_examples": len(spec["train"]),
            "command": f"setfit.Trainer on the K-shot texts (benchmarks/fewshot.py, seed {seed})"}


def run_ours(folder: Path, dataset: str, k: int, seed: int, method: str) -> dict[str, Any]:
    run_dir = folder / method
    args = [*kshot_overrides(dataset, k, seed), *METHODS[method]]
    if method.startswith("setfit"):
        args.append(f"finetune.adapter.num_iterations={ITERATIONS.get(dataset, 20)}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments", *args, f"hydra.run.dir={run_dir}"], check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    m = json.loads((run_dir / "metrics.json").read_text())
    ids = json.loads((run_dir / "kshot_ids.json").read_text())
    return {"metrics": {k2: v for k2, v in m.items() if k2 in ("test/accuracy", "test/f1_macro", "test/f1")},
            "wall_s": round(wall, 1), "fit_s": m.get("train/fit_time_s"), "train_examples": len(ids["train"]),
            "command": "python -m experiments " + " ".join(args)}


def record_file(out: Path, dataset: str, k: int, seed: int, method: str) -> Path:
    return out / dataset / f"k{k}" / f"seed{seed}" / f"{method}.json"


TIE = 1e-6  # below 1 / (test examples) of every dataset here


def paired(out: Path, dataset: str, k: int, method: str,
           library: Sequence[Path] = ()) -> tuple[list[float], list[float]]:
    """Per draw on which both ``method`` and ``setfit_lib`` have a record (ascending seed): the score
    difference ``method - setfit_lib`` and the wall-time ratio ``method / setfit_lib``. A draw whose library
    record is not under ``out`` is looked up in the ``library`` folders (records of another block, so of
    another machine or session): it adds a score difference but no wall-time ratio."""
    diffs, ratios = [], []
    for path in sorted((out / dataset / f"k{k}").glob(f"seed*/{method}.json")):
        here = path.with_name("setfit_lib.json")
        found = [here, *(folder / dataset / f"k{k}" / path.parent.name / "setfit_lib.json" for folder in library)]
        lib_path = next((p for p in found if p.is_file()), None)
        if lib_path is None:
            continue
        lib, rec = json.loads(lib_path.read_text()), json.loads(path.read_text())
        diffs.append(rec["metrics"][METRIC[dataset]] - lib["metrics"][METRIC[dataset]])
        if lib_path == here:
            ratios.append(rec["wall_s"] / lib["wall_s"])
    return diffs, ratios


def paired_lines(out: Path, cols: list[tuple[str, int]], methods: list[str],
                 library: Sequence[Path] = ()) -> list[str]:
    """The table of each method against the library on the same draws: mean ± sample std of the paired
    accuracy difference, the draws on which the method scored higher (ties apart), and the mean wall-time
    ratio. Empty when no draw has both."""
    cols = [(d, k) for d, k in cols if d not in NER]
    rows = []
    for method in [m for m in methods if m != "setfit_lib"]:
        cells, any_pair = [], False
        for d, k in cols:
            diffs, ratios = paired(out, d, k, method, library)
            if not diffs:
                cells.append("–")
                continue
            any_pair = True
            spread = f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
            # Tied: the same number of correct test examples (float32 and float64 accuracies differ by ~1e-8).
            ahead, tied = sum(x >= TIE for x in diffs), sum(abs(x) < TIE for x in diffs)
            if not ratios:
                wall = "wall: library on another machine"
            else:
                wall = f"wall {statistics.mean(ratios):.2f}x"
                if len(ratios) < len(diffs):
                    wall += f" ({len(ratios)} of them)"
            cells.append(f"{statistics.mean(diffs):+.4f}{spread} (ahead {ahead}, tied {tied}, of {len(diffs)}); {wall}")
        if any_pair:
            rows.append(f"| {method} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "Against the library on the same draws (method − setfit_lib, mean ± sample std over the draws "
            "both ran; draws on which the method scored higher or the same; mean ratio of wall times):", "",
            "| method | " + " | ".join(f"{d} K={k}" for d, k in cols) + " |", "| --- " * (1 + len(cols)) + "|",
            *rows]


def table(out: Path, datasets: list[str], ks: list[int], methods: list[str], results_dir: Path,
          block: str = "fewshot", library: Sequence[Path] = ()) -> str:
    """The Markdown block ``block`` of the few-shot table from the records under ``out``."""
    from results import machine

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    # Every K run so far for each dataset (the NER column uses its own K), else the K asked for.
    cols = [(d, k) for d in datasets
            for k in (sorted(int(q.name[1:]) for q in (out / d).glob("k*") if q.name[1:].isdigit()) or ks)]
    title = "### Few-shot: the setfit library against our recipes, MiniLM" + ("" if block == "fewshot" else f" ({block})")
    lines = [f"<!-- results:{block} -->", title, "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " ").strip(), "",
             (__doc__ or "").split("\n\n")[3].strip().replace("``", "`"), "",
             "Test accuracy (CoNLL: entity-level F1), mean ± sample std over K-shot draws (seed = k_shot_seed = "
             "training seed), and mean wall time per run in seconds (process launch to exit, test included). "
             "\"–\": not run.", "",
             "Machine: {cpu} (flags: {flags}; torch {torch}, transformers {transformers}).".format(**machine()), "",
             "| method | " + " | ".join(f"{d} K={k}" for d, k in cols) + " | " +
             " | ".join(f"{d} K={k} wall (s)" for d, k in cols) + " |",
             "| --- " * (1 + 2 * len(cols)) + "|"]
    for method in methods:
        accs, walls, seeds_seen = [], [], set()
        for d, k in cols:
            recs = [json.loads(p.read_text()) for p in sorted((out / d / f"k{k}").glob(f"seed*/{method}.json"))]
            seeds_seen |= {r["seed"] for r in recs}
            accs.append(cell([r["metrics"][METRIC[d]] for r in recs]) if applies(d, method) else "n/a")
            walls.append(f"{statistics.mean(r['wall_s'] for r in recs):.0f}" if recs else "–")
        lines.append(f"| {method} | " + " | ".join(accs) + " | " + " | ".join(walls) + " |")
    majority = []
    for d, _ in cols:
        path = out / d / "majority.json"
        majority.append("n/a" if d in NER else
                        f"{json.loads(path.read_text())['test/accuracy']:.3f}" if path.is_file() else "–")
    lines.append("| majority class (full training split) | " + " | ".join(majority) + " |" + " |" * len(cols))
    full = []
    for d, _ in cols:
        table_name, row = FULL_DATA[d]
        recs = [json.loads(p.read_text()) for p in sorted((results_dir / table_name / row).glob("seed*/record.json"))]
        full.append(cell([r["metrics"][METRIC[d]] for r in recs]) + " (all data)" if recs
                    else f"no record under --results (see the {table_name} table)")
    lines.append("| `full` on the whole training split (make results) | " + " | ".join(full) + " |" + " |" * len(cols))
    lines += paired_lines(out, cols, methods, library)
    commands = set()
    for path in out.glob("*/k*/seed*/*.json"):
        if path.stem not in methods or path.parts[-4] not in datasets:
            continue
        rec = json.loads(path.read_text())
        if "python -m" in rec.get("command", ""):  # our runs (the library's record names no command)
            commands.add(rec["command"].replace(f"seed={rec['seed']}", "seed=S"))
    commands = sorted(commands)
    lines += ["", "Commands of our runs (S = the seed):", "", *[f"    {c}" for c in commands], "",
              f"<!-- /results:{block} -->"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["phrasebank", "banking77"], choices=list(DATASETS))
    parser.add_argument("--k", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "fewshot")
    parser.add_argument("--results", type=Path, default=ROOT / "outputs" / "results",
                        help="records of make results (the full-data row)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--block", default="fewshot",
                        help="the docs block to write (another --out, e.g. another machine, gets its own block)")
    parser.add_argument("--library-records", nargs="+", type=Path, default=[],
                        help="other --out folders whose setfit_lib records pair with draws the library did not run "
                             "under --out (scores only: their wall times are of another run)")
    parser.add_argument("--setfit-lib-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setfit_lib_worker:
        setfit_lib_worker(*args.setfit_lib_worker)
        return
    from experiments import reporting

    out = args.out.resolve()
    if not args.tables_only:
        for dataset in args.datasets:
            if dataset not in NER and not (out / dataset / "majority.json").is_file():
                reporting.write_json(out / dataset / "majority.json", {"test/accuracy": majority_accuracy(dataset)})
            for k in args.k:
                for seed in args.seeds:
                    folder = out / dataset / f"k{k}" / f"seed{seed}"
                    for method in [m for m in args.methods if applies(dataset, m)]:
                        path = record_file(out, dataset, k, seed, method)
                        if path.is_file():
                            continue
                        folder.mkdir(parents=True, exist_ok=True)
                        print(f"+ {dataset} K={k} seed {seed}: {method}", flush=True)
                        rec = run_setfit_lib(folder, dataset, k, seed) if method == "setfit_lib" else \
                            run_ours(folder, dataset, k, seed, method)
                        reporting.write_json(path, {**rec, "dataset": dataset, "k": k, "seed": seed,
                                                    "method": method})
    from results import splice

    docs = args.docs
    text = docs.read_text() if docs.is_file() else "# Results\n"
    reporting.write_text(docs, splice(text, args.block, table(out, args.datasets, args.k, args.methods,
                                                              args.results.resolve(), args.block,
                                                              [p.resolve() for p in args.library_records])))
    print(f"table written to {docs}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
