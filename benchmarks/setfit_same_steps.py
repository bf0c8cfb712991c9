"""SetFit's contrastive training, ours against the library's, on the same pairs in the same order.

Why: ours scores a few test texts below the ``setfit`` library on most draws (docs/results.md), with the
same recipe and the same evaluation path (benchmarks/setfit_same_body.py). This separates the random
streams from any difference left in the training step. Both runs use seed 42, at which both draw the
same pair list (the library's pair shuffle always uses 42; ours uses the run's seed) and the same batch
order (``torch.randperm`` from a generator seeded with the seed: the library's ``RandomSampler``, our
``TrainSampler`` with ``data.group_by_length=false``); the script checks the pair list. Dropout is off in
both (every ``nn.Dropout`` built with ``p=0``) unless ``--dropout``. Each side runs in its own process:
the library through ``setfit.Trainer``, ours through ``python -m experiments``. Prints how far apart the
two fine-tuned encoders are, relative to how far training moved them, and both test accuracies.

    python benchmarks/setfit_same_steps.py phrasebank 8 1 [--dropout]   # dataset, K, draw (data.k_shot_seed)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SEED = 42  # setfit.sampler.shuffle_combinations' fixed seed
NO_DROPOUT = ("import torch.nn as nn\n"
              "nn.Dropout.__init__ = (lambda self, p=0.5, inplace=False, _init=nn.Dropout.__init__:\n"
              "                       _init(self, 0.0, inplace))\n")


def library(spec_path: Path, out: Path, dropout: bool) -> None:
    """Worker: the library's training on the spec's texts; writes the encoder's weights and test accuracy."""
    if not dropout:
        exec(NO_DROPOUT, {})
    import torch
    from fewshot import train_setfit_lib

    model, pred = train_setfit_lib(json.loads(spec_path.read_text()), SEED, out / "checkpoints")
    torch.save(model.model_body[0].auto_model.state_dict(), out / "library_encoder.pt")
    (out / "library_predictions.json").write_text(json.dumps(pred))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("k", type=int)
    parser.add_argument("draw", type=int)
    parser.add_argument("--dropout", action="store_true", help="keep dropout on (then the streams differ)")
    parser.add_argument("--out", type=Path, default=Path("outputs/setfit_same_steps"))
    parser.add_argument("--library-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_worker:
        library(*args.library_worker, args.dropout)
        return

    import torch
    from fewshot import ITERATIONS, METHODS, ROOT, kshot_overrides, split_texts
    from setfit.sampler import ContrastiveDataset
    from transformers import AutoModel

    from experiments.tasks.pairs import contrastive_pairs

    start = time.perf_counter()
    out = (args.out / f"{args.dataset}_k{args.k}_draw{args.draw}{'_dropout' if args.dropout else ''}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    iterations = ITERATIONS.get(args.dataset, 20)
    spec = {**split_texts(args.dataset, args.k, args.draw), "num_iterations": iterations}
    texts, labels = [t for t, _ in spec["train"]], [y for _, y in spec["train"]]
    ref = [(r["sentence_1"], r["sentence_2"], r["label"])
           for r in ContrastiveDataset(texts, labels, multilabel=False, num_iterations=iterations)]
    ours = [(texts[a], texts[b], t) for a, b, t in contrastive_pairs(labels, iterations, SEED)]
    assert ours == ref, "the pair lists differ"
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))

    flag = ["--dropout"] if args.dropout else []
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, args.dataset, str(args.k), str(args.draw), *flag,
                    "--library-worker", str(spec_path), str(out)], check=True, cwd=ROOT)
    t_lib = time.perf_counter() - t0
    overrides = [*kshot_overrides(args.dataset, args.k, args.draw), *METHODS["setfit"],
                 f"finetune.adapter.num_iterations={iterations}", f"seed={SEED}", "data.group_by_length=false",
                 "export.model=true", f"hydra.run.dir={out / 'ours'}"]
    code = ("" if args.dropout else NO_DROPOUT) + "import runpy, sys\nsys.argv[0] = 'experiments'\n" \
        "runpy.run_module('experiments', run_name='__main__')\n"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *overrides], check=True, cwd=ROOT)
    t_ours = time.perf_counter() - t0

    initial = AutoModel.from_pretrained(spec["model"]).state_dict()
    mine = AutoModel.from_pretrained(out / "ours" / "model").state_dict()
    theirs = torch.load(out / "library_encoder.pt")
    names = [n for n in theirs if n in mine and theirs[n].is_floating_point()]
    moved = torch.sqrt(sum(((theirs[n] - initial[n]) ** 2).sum() for n in names))
    apart = torch.sqrt(sum(((theirs[n] - mine[n]) ** 2).sum() for n in names))
    largest = {n: float((theirs[n] - mine[n]).abs().max()) for n in names}
    worst = max(names, key=largest.get)
    gold = [y for _, y in spec["test"]]
    pred_lib = json.loads((out / "library_predictions.json").read_text())
    rows = [json.loads(line) for line in (out / "ours" / "predictions.jsonl").read_text().splitlines()]
    pred_ours = [spec["labels"].index(r["predicted"]) for r in rows] if len(rows) == len(gold) else None
    acc = json.loads((out / "ours" / "metrics.json").read_text())["test/accuracy"]
    agree = f"{sum(a == b for a, b in zip(pred_ours, pred_lib, strict=True)) / len(gold):.4f}" if pred_ours else "n/a"
    lib_acc = sum(a == b for a, b in zip(pred_lib, gold, strict=True)) / len(gold)
    print(f"{args.dataset} K={args.k} draw {args.draw}, seed {SEED}, dropout {'on' if args.dropout else 'off'}, "
          f"{len(ref)} pairs: encoders apart by {apart:.3e} (L2 over {len(names)} tensors) against {moved:.3e} "
          f"moved by training (ratio {apart / moved:.2e}); largest |difference| {largest[worst]:.2e} in {worst}; "
          f"test accuracy ours {acc:.4f}, library {lib_acc:.4f}; predictions agree on {agree}; "
          f"library {t_lib:.0f} s, ours {t_ours:.0f} s, total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
