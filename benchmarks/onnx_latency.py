"""CPU inference latency of an exported model: ONNX Runtime against PyTorch eager, batch 1 and 32.

    python benchmarks/onnx_latency.py <run>/model [--head token_classification] [--iterations 50]

Exports ``<model>/../model.onnx`` when it is missing (``experiments.onnx_export``), then times a forward
pass of both on the same tokenized batches (real sentences of 8-40 words, padded per batch), after 5
warm-up calls, with every thread torch and ONNX Runtime would use by default. Prints p50 and p95 in
milliseconds per batch and the speed-up of ONNX Runtime at the median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

WORDS = ("the bank of america said on monday that its profit rose in new york while shares of apple fell "
         "after john smith left google for a start-up in paris where sales grew by ten percent").split()


def batch(tokenizer, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(8, 41)))) for _ in range(size)]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in tokenizer.model_input_names if k in enc}


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--head", default="token_classification")
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    import onnxruntime as ort
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from experiments.onnx_export import export_onnx

    model_dir = Path(args.model_dir)
    onnx_path = model_dir.parent / "model.onnx"
    if not onnx_path.exists():
        export_onnx(model_dir, onnx_path, head=args.head)
    auto = AutoModelForTokenClassification if args.head == "token_classification" else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    print(f"model {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"torch threads {torch.get_num_threads()}")
    print("| batch | runtime | p50 ms | p95 ms | ONNX Runtime speed-up at p50 |\n| --- | --- | --- | --- | --- |")
    for size in (1, 32):
        batches = [batch(tokenizer, size, rng) for _ in range(args.iterations + 5)]
        results = {}
        for name in ("PyTorch eager", "ONNX Runtime"):
            times = []
            for i, b in enumerate(batches):
                start = time.perf_counter()
                if name == "ONNX Runtime":
                    session.run(None, b)
                else:
                    with torch.inference_mode():
                        model(**{k: torch.from_numpy(v) for k, v in b.items()})
                if i >= 5:
                    times.append(time.perf_counter() - start)
            results[name] = percentiles(times)
        speedup = results["PyTorch eager"][0] / results["ONNX Runtime"][0]
        for name, (p50, p95) in results.items():
            extra = f"{speedup:.2f}x" if name == "ONNX Runtime" else ""
            print(f"| {size} | {name} | {p50:.1f} | {p95:.1f} | {extra} |")


if __name__ == "__main__":
    main()
