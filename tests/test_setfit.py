"""finetune=setfit: pair generation (counted by hand and against the ``setfit`` library's sampler), the
cosine-similarity loss, the logistic-regression head (against scikit-learn's own probabilities), and a run
on the tiny BERT that trains on pairs, tests and exports a head that reloads."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from experiments.errors import ConfigError
from experiments.tasks.pairs import contrastive_pairs


def test_pair_counts_targets_and_alternation_by_hand():
    labels = [0, 0, 1, 1, 1]
    pairs = contrastive_pairs(labels, num_iterations=2, seed=0)
    assert len(pairs) == 2 * 2 * len(labels)
    assert [t for _, _, t in pairs] == [1.0, 0.0] * 10  # positive first, alternating
    for i, j, t in pairs:
        assert i <= j and t == float(labels[i] == labels[j])
    # Unordered pairs with replacement: positives 3 (class 0) + 6 (class 1) = 9, negatives 2 * 3 = 6.
    # 10 of each are asked for: the 6 negatives cycle, so each appears once or twice and none is missing.
    negatives = Counter((i, j) for i, j, t in pairs if t == 0.0)
    assert len(negatives) == 6 and sorted(negatives.values()) == [1] * 2 + [2] * 4
    assert len({(i, j) for i, j, t in pairs if t == 1.0}) == 9


def test_pairs_are_seeded_and_multilabel_positives_share_a_label():
    assert contrastive_pairs([0, 1, 0, 1], 3, seed=5) == contrastive_pairs([0, 1, 0, 1], 3, seed=5)
    assert contrastive_pairs([0, 1, 0, 1], 3, seed=5) != contrastive_pairs([0, 1, 0, 1], 3, seed=6)
    hot = [(1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    for i, j, t in contrastive_pairs(hot, 2, seed=0):
        assert t == float(bool(np.logical_and(hot[i], hot[j]).any()))


def test_pairs_match_the_setfit_librarys_pair_set():
    setfit_sampler = pytest.importorskip("setfit.sampler")
    labels = [0, 1, 2, 0, 1, 2, 0]
    texts = [f"t{i}" for i in range(len(labels))]
    ref = list(setfit_sampler.ContrastiveDataset(texts, labels, multilabel=False, num_iterations=3))
    ours = contrastive_pairs(labels, 3, seed=42)
    assert len(ours) == len(ref)
    assert Counter(t for *_, t in ours) == Counter(r["label"] for r in ref)
    # The same kinds of pairs (which unordered pairs are positive / negative), each side cycling its list.
    ref_pos = {frozenset((r["sentence_1"], r["sentence_2"])) for r in ref if r["label"] == 1.0}
    our_pos = {frozenset((texts[i], texts[j])) for i, j, t in ours if t == 1.0}
    assert ref_pos == our_pos


def test_bad_pair_settings_are_config_errors():
    with pytest.raises(ConfigError, match="positive integer"):
        contrastive_pairs([0, 1], 0, seed=0)
    with pytest.raises(ConfigError, match="two classes"):
        contrastive_pairs([3, 3, 3], 2, seed=0)


@pytest.fixture(scope="module")
def tiny_setfit(tiny_encoder_dir):
    from transformers import AutoModel

    from experiments.finetune.setfit import SetFitClassifier

    return SetFitClassifier(AutoModel.from_pretrained(tiny_encoder_dir), num_labels=3).eval()


def test_pair_loss_is_the_mse_of_the_cosine_similarity(tiny_setfit, tiny_tokenizer):
    a = tiny_tokenizer(["refund my card", "the bank"], padding=True, return_tensors="pt")
    b = tiny_tokenizer(["cancel my order", "the bank"], padding=True, return_tensors="pt")
    target = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        out = tiny_setfit(**a, pair_input_ids=b["input_ids"], pair_attention_mask=b["attention_mask"],
                          pair_token_type_ids=b["token_type_ids"], pair_similarity=target)
        hidden_a = tiny_setfit.encoder(**a).last_hidden_state
        hidden_b = tiny_setfit.encoder(**b).last_hidden_state
    def pooled(h, m):
        e = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return e / e.norm(dim=-1, keepdim=True)
    ea, eb = pooled(hidden_a, a["attention_mask"]), pooled(hidden_b, b["attention_mask"])
    cos = (ea * eb).sum(-1)
    assert abs(float(cos[1]) - 1.0) < 1e-5  # the same sentence
    torch.testing.assert_close(out.loss, ((cos - target) ** 2).mean())


def test_embeddings_and_pair_loss_are_sentence_transformers(tiny_setfit, tiny_tokenizer, tiny_encoder_dir):
    """The reference: sentence-transformers' Transformer + mean Pooling + Normalize and its
    CosineSimilarityLoss (what the setfit library trains), on the same weights, texts of unequal length."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import losses, models
    body = st.SentenceTransformer(modules=[models.Transformer(str(tiny_encoder_dir), max_seq_length=64),
                                           models.Pooling(32, pooling_mode="mean"), models.Normalize()],
                                  device="cpu").eval()
    a_texts = ["refund my card", "the bank of america rose in new york", "sales fell"]
    b_texts = ["cancel my order please", "the bank", "where is my refund"]
    want = body.encode(a_texts, batch_size=2, convert_to_tensor=True)
    a = tiny_tokenizer(a_texts, padding=True, return_tensors="pt")
    b = tiny_tokenizer(b_texts, padding=True, return_tensors="pt")
    target = torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        torch.testing.assert_close(tiny_setfit.embed(**a), want, atol=1e-5, rtol=1e-5)
        ours = tiny_setfit(**a, pair_input_ids=b["input_ids"], pair_attention_mask=b["attention_mask"],
                           pair_token_type_ids=b["token_type_ids"], pair_similarity=target).loss
        features = [body.tokenize(a_texts), body.tokenize(b_texts)]
        reference = losses.CosineSimilarityLoss(body)(features, target)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_embed_batches_are_sentence_transformers_encode_in_eval_mode(tiny_encoder_dir, tiny_tokenizer):
    """What the head is fitted on: a model left in train mode (dropout 0.1) still embeds without dropout,
    as sentence-transformers' ``encode`` does, and is put back in train mode; labels keep batch order."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models
    from transformers import AutoModel

    from experiments.finetune.setfit import SetFitClassifier

    model = SetFitClassifier(AutoModel.from_pretrained(tiny_encoder_dir), num_labels=3).train()
    assert model.encoder.config.hidden_dropout_prob > 0
    body = st.SentenceTransformer(modules=[models.Transformer(str(tiny_encoder_dir), max_seq_length=64),
                                           models.Pooling(32, pooling_mode="mean"), models.Normalize()],
                                  device="cpu")
    texts = [["refund my card", "the bank of america rose in new york"], ["sales fell"]]
    batches = [{**tiny_tokenizer(t, padding=True, return_tensors="pt"), "labels": torch.tensor(y)}
               for t, y in zip(texts, ([2, 0], [1]), strict=True)]
    embeddings, labels = model.embed_batches(batches)
    assert model.training and embeddings.shape == (3, 32)
    assert labels.tolist() == [2, 0, 1]
    want = body.encode([t for ts in texts for t in ts], batch_size=2, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, want, atol=1e-5, rtol=1e-5)


def test_head_probabilities_are_scikit_learns(tiny_setfit):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    x = rng.randn(30, tiny_setfit.head_weight.shape[1]).astype(np.float32)
    for classes in ([0, 1, 2], [0, 2]):  # three classes, and two present of three (binary regression)
        y = np.array(classes * (30 // len(classes)))
        tiny_setfit.fit_head(torch.from_numpy(x), torch.from_numpy(y))
        probs = tiny_setfit.head(torch.from_numpy(x)).softmax(-1).numpy()
        ref = LogisticRegression().fit(x, y).predict_proba(x)
        np.testing.assert_allclose(probs[:, classes], ref, atol=1e-5)
        missing = sorted(set(range(3)) - set(classes))
        assert (probs[:, missing] < 1e-6).all()


def test_multilabel_head_is_one_regression_per_label(tiny_encoder_dir):
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    from experiments.finetune.setfit import SetFitClassifier

    model = SetFitClassifier(AutoModel.from_pretrained(tiny_encoder_dir), num_labels=3, multi_label=True)
    rng = np.random.RandomState(1)
    x = rng.randn(20, model.head_weight.shape[1]).astype(np.float32)
    y = np.stack([rng.rand(20) > 0.5, rng.rand(20) > 0.3, np.ones(20, bool)], 1).astype(np.float32)
    model.fit_head(torch.from_numpy(x), torch.from_numpy(y))
    probs = torch.sigmoid(model.head(torch.from_numpy(x))).numpy()
    for k in range(2):
        np.testing.assert_allclose(probs[:, k], LogisticRegression().fit(x, y[:, k]).predict_proba(x)[:, 1], atol=1e-5)
    assert (probs[:, 2] > 1 - 1e-6).all()  # a label every example has: always on


def test_a_setfit_run_trains_on_pairs_tests_and_exports_a_reloadable_head(run_cli, tmp_path):
    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(8)] + \
        [f"cancel order {n},shop" for n in range(8)] + [f"where is the bank {n},place" for n in range(8)]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    metrics, run_dir = run_cli("task=text_classification", f"data.train_file={data}", "finetune=setfit",
                               "finetune.adapter.num_iterations=2", "trainer.max_epochs=1", "data.batch_size=8")
    assert metrics["train/epochs"] == 1 and "test/accuracy" in metrics
    head = json.loads((run_dir / "model" / "setfit_head.json").read_text())
    assert len(head["weight"]) == 3 and head["normalize"] is True
    assert any(abs(w) > 0 for row in head["weight"] for w in row)  # fitted, not the zero initialisation
    from experiments.finetune.setfit import load_setfit

    model = load_setfit(run_dir / "model").eval()
    torch.testing.assert_close(model.head_weight, torch.tensor(head["weight"]))
    # Predicting with the export: the same strategy reads the head back from setfit_head.json.
    texts = tmp_path / "texts.txt"
    texts.write_text("refund 3 my card\ncancel order 5\n")
    run_cli("task=text_classification", "mode=predict", f"model.name_or_path={run_dir / 'model'}", "finetune=setfit",
            f"data.predict_file={texts}", run_dir=tmp_path / "predict")
    rows = [json.loads(line) for line in (tmp_path / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["refund 3 my card", "cancel order 5"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    with torch.no_grad():
        probs = model(**tok([r["text"] for r in rows], padding=True, return_tensors="pt")).logits.softmax(-1)
    id2label = {int(k): v for k, v in head["id2label"].items()}
    for r, p in zip(rows, probs, strict=True):
        assert r["predicted"] == id2label[int(p.argmax())]
        assert abs(r["probabilities"][r["predicted"]] - float(p.max())) < 1e-4


def test_the_datamodule_serves_pair_batches(tmp_path, tiny_tokenizer):
    from experiments.tasks.classification.datamodule import TextClassificationDataModule

    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(5)] + [f"cancel order {n},shop" for n in range(3)]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=str(data), validation_file=str(data),
                                      contrastive_pairs=3, batch_size=4, seed=1)
    dm.setup("fit")
    assert len(dm.train_items()) == 2 * 3 * 8
    batch = next(iter(dm.train_dataloader()))
    assert batch["pair_input_ids"].shape[0] == batch["input_ids"].shape[0] == 4
    assert set(batch["pair_similarity"].tolist()) <= {0.0, 1.0}
    assert "labels" not in batch
    for i, j, t in dm.train_items():
        assert t == float(dm.features["train"][i]["labels"] == dm.features["train"][j]["labels"])


def test_a_kshot_run_without_validation_tests_the_last_epoch(run_cli, tmp_path):
    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(8)] + [f"cancel order {n},shop" for n in range(8)]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    metrics, _ = run_cli("task=text_classification", f"data.train_file={data}", "finetune=setfit", "data.k_shot=4",
                         "finetune.adapter.num_iterations=2", "trainer.max_epochs=2", "trainer.limit_val_batches=0",
                         "export.model=false")
    # 8 examples -> 2 * 2 * 8 = 32 pairs -> 2 batches of 16 (setfit's batch size) per epoch: the end of epoch 2.
    assert metrics["train/epochs"] == 2 and "train/monitor" not in metrics
    assert metrics["test/checkpoint"].endswith("epoch01-step4.ckpt")


def test_setfit_with_ner_or_onnx_is_a_clear_error(run_cli, tmp_path):
    from test_cli import data_overrides, write_data

    with pytest.raises(ConfigError, match="finetune=setfit classifies sentences"):
        run_cli(*data_overrides(write_data(tmp_path)), "finetune=setfit", "debug=limit")
    data = tmp_path / "t.csv"
    data.write_text("text,label\nrefund my card,money\ncancel order,shop\n" * 4)
    with pytest.raises(ConfigError, match="setfit_head.json"):
        run_cli("task=text_classification", f"data.train_file={data}", "finetune=setfit", "export.onnx=true")


def test_a_setfit_run_takes_the_setfit_librarys_steps(tmp_path, tiny_encoder_dir):
    """The reference is ``setfit.Trainer`` itself: with dropout off and the same pairs in the same order (seed 42,
    the library's fixed pair-shuffle seed; a uniform batch shuffle, as its ``RandomSampler``), our run must end
    with the encoder weights the library ends with (same loss, AdamW, clipping, weight decay and schedule).
    15 optimizer steps make the library's warmup ceil(0.1 * 15) = 2 steps (HF ``get_warmup_steps``), not 1."""
    setfit = pytest.importorskip("setfit")
    import shutil

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, models
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    from cli_helpers import run_cli

    folder = tmp_path / "bert"
    shutil.copytree(tiny_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    words = {"money": "refund my card", "shop": "cancel my order", "place": "where is the bank"}
    rows = [(f"{text} {'please ' * n}".strip(), label) for n in range(4) for label, text in words.items()]
    data = tmp_path / "t.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    initial = AutoModel.from_pretrained(folder).state_dict()

    # 12 examples * 2 * 10 iterations = 240 pairs = 15 batches of 16.
    body = SentenceTransformer(modules=[models.Transformer(str(folder), max_seq_length=64),
                                        models.Pooling(32, pooling_mode="mean"), models.Normalize()], device="cpu")
    args = setfit.TrainingArguments(batch_size=16, num_epochs=1, num_iterations=10, body_learning_rate=1e-3, seed=42,
                                    save_strategy="no", report_to="none", output_dir=str(tmp_path / "lib"),
                                    show_progress_bar=False)
    train = Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
    setfit.Trainer(model=setfit.SetFitModel(model_body=body, model_head=LogisticRegression()), args=args,
                   train_dataset=train).train()
    theirs = body[0].auto_model.state_dict()

    files = [f"data.{split}_file={data}" for split in ("train", "validation", "test")]
    run_cli((f"model.name_or_path={folder}", "trainer.precision=32", "logger=csv", "task=text_classification",
             *files, "finetune=setfit", "finetune.adapter.num_iterations=10", "trainer.max_epochs=1",
             "optimizer.lr=1e-3", "seed=42", "data.group_by_length=false", "trainer.limit_val_batches=0"),
            tmp_path / "run", quick=False)
    ours = AutoModel.from_pretrained(tmp_path / "run" / "model").state_dict()
    names = [n for n in theirs if theirs[n].is_floating_point()]
    moved = max(float((theirs[n] - initial[n]).abs().max()) for n in names)
    assert moved > 1e-3  # training moved the weights, so agreeing is not trivial
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name], atol=moved * 1e-3, rtol=0, msg=name)


def test_every_dropout_of_the_encoder_can_be_turned_off(tiny_encoder_dir, tiny_tokenizer):
    """``+model.hidden_dropout_prob=0 +model.attention_probs_dropout_prob=0``: two training-mode passes agree
    exactly only when both are 0 (the tiny BERT's config has 0.1 for each)."""
    from experiments.finetune.setfit import SetFitConfig
    from experiments.models.build import build_model

    batch = tiny_tokenizer(["refund my card", "where is the bank"], padding=True, return_tensors="pt")

    def two_passes(**dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        model = build_model(str(tiny_encoder_dir), head="sequence_classification", labels=["a", "b"],
                            adapter=SetFitConfig(), **dropout).train()
        return model.embed(**batch), model.embed(**batch)

    assert not torch.allclose(*two_passes())
    assert not torch.allclose(*two_passes(hidden_dropout_prob=0.0))  # attention dropout still on
    torch.testing.assert_close(*two_passes(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), rtol=0, atol=0)
