"""The SetFit evaluation path on the pretrained (not fine-tuned) body: ours against the library's.

Why: to tell a difference in the head or in the embeddings of test texts from one in contrastive training.
Our path (the datamodule's embedding loader, ``SetFitClassifier.embed_batches`` and ``fit_head``) and the
library's (sentence-transformers' ``encode``, then scikit-learn's ``LogisticRegression`` as ``setfit``
fits it) embed the same K-shot draw and test split, fit the head and predict. Prints the largest
embedding difference, both test accuracies and the share of test texts on which the predictions agree.

    python benchmarks/setfit_same_body.py banking77 8 1    # dataset, K, draw (data.k_shot_seed)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(dataset: str, k: int, seed: int) -> None:
    import numpy as np
    from fewshot import METHODS, datamodule, kshot_overrides
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    from experiments.finetune.setfit import SetFitClassifier

    start = time.perf_counter()
    cfg, dm = datamodule([*kshot_overrides(dataset, k, seed), *METHODS["setfit"]])
    path, labels = str(cfg.model.name_or_path), dm.labels
    model = SetFitClassifier(AutoModel.from_pretrained(path), len(labels)).eval()

    x_train, y_train = model.embed_batches(dm.embedding_loader("train"))
    x_test, y_test = model.embed_batches(dm.embedding_loader("test"))
    model.fit_head(x_train, y_train)
    pred_ours = model.head(x_test).argmax(-1).numpy()

    body = SentenceTransformer(path, device="cpu")
    texts = {s: [e.text for e in dm.examples[s]] for s in ("train", "test")}
    gold = {s: np.array([labels.index(e.label) for e in dm.examples[s]]) for s in ("train", "test")}
    assert (gold["train"] == y_train.numpy()).all() and (gold["test"] == y_test.numpy()).all()
    lib_train, lib_test = body.encode(texts["train"], batch_size=32), body.encode(texts["test"], batch_size=64)
    pred_lib = LogisticRegression().fit(lib_train, gold["train"]).predict(lib_test)
    diff = max(np.abs(lib_train - x_train.numpy()).max(), np.abs(lib_test - x_test.numpy()).max())
    print(f"{dataset} K={k} draw {seed}, pretrained body: max |embedding difference| {diff:.2e}; "
          f"test accuracy ours {(pred_ours == gold['test']).mean():.4f}, library {(pred_lib == gold['test']).mean():.4f}; "
          f"predictions agree on {(pred_ours == pred_lib).mean():.4f} of {len(pred_lib)}; "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
