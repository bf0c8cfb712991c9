"""Sequence classification: label mapping, metrics against hand-worked numbers, thresholds, report, PNG.

The module tests use a fake "model" whose logits are fixed per first word of the text, so every
probability (and therefore every metric) is known by hand; the Lightning loops, the datamodule and the
torchmetrics objects are the real ones.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassF1Score

from experiments.errors import DataError
from experiments.modules.sequence_classification import SequenceClassificationModule
from experiments.tasks.classification import metrics as M
from experiments.tasks.classification.datamodule import TextClassificationDataModule

# ------------------------------------------------------------------------------------------ helpers


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> str:
    path.write_text(header + "\n" + "".join(f"{t},{lab}\n" for t, lab in rows), encoding="utf-8")
    return str(path)


class FixedLogits(nn.Module):
    """Logits looked up from the first word-piece after [CLS]: ``table[token id]`` (+ a trainable 0)."""

    def __init__(self, tokenizer, logits_by_word: dict[str, list[float]]):
        super().__init__()
        n = len(next(iter(logits_by_word.values())))
        table = torch.zeros(len(tokenizer), n)
        for word, row in logits_by_word.items():
            table[tokenizer.convert_tokens_to_ids(word)] = torch.tensor(row)
        self.register_buffer("table", table)
        self.offset = nn.Parameter(torch.zeros(n))
        self.config = SimpleNamespace()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return SimpleNamespace(logits=self.table[input_ids[:, 1]] + self.offset * 0)


def log_probs(*probs: float) -> list[float]:
    """Logits whose softmax is ``probs``."""
    return [math.log(p) for p in probs]


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=str(tmp_path))
    return L.Trainer(**{**defaults, **kwargs})


def module(model, labels, tmp_path, **kwargs) -> SequenceClassificationModule:
    return SequenceClassificationModule(
        model=model, labels=labels, optimizer=functools.partial(torch.optim.SGD, lr=0.0), scheduler=None,
        **kwargs,
    )


# ------------------------------------------------------------------------------------ label mapping


def test_labels_sorted_from_train_and_unknown_test_label_names_file_and_row(tmp_path, tiny_tokenizer):
    train = write_csv(tmp_path / "train.csv", [("the bank", "pos"), ("of", "neg"), ("new", "neu"), ("york", "pos")])
    dev = write_csv(tmp_path / "dev.csv", [("the", "neg")])
    test = write_csv(tmp_path / "test.csv", [("the", "pos"), ("bank", "surprise")])
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=dev, test_file=test)
    assert dm.labels == ["neg", "neu", "pos"]
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert err.value.path == test and err.value.line == 3  # header is row 1
    assert "'surprise'" in str(err.value)


def test_given_labels_are_used_and_multi_label_is_multi_hot(tmp_path, tiny_tokenizer):
    train = write_csv(tmp_path / "train.csv", [("the", "b|a"), ("bank", "c"), ("of", "")])
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=train, multi_label=True)
    assert dm.labels == ["a", "b", "c"]
    dm.setup("fit")
    assert [f["labels"] for f in dm.features["train"]] == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert dm.class_counts().tolist() == [1, 1, 1]
    fixed = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=train,
                                         multi_label=True, labels=["c", "b", "a"])
    assert fixed.labels == ["c", "b", "a"]


def test_oos_threshold_mode_drops_oos_from_train_and_scores_it_as_an_extra_class(tmp_path, tiny_tokenizer):
    train = write_csv(tmp_path / "train.csv", [("the", "x"), ("bank", "y"), ("of", "oos")])
    test = write_csv(tmp_path / "test.csv", [("the", "oos"), ("bank", "y")])
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=train, test_file=test,
                                      oos="threshold")
    assert dm.labels == ["x", "y"] and dm.eval_labels == ["x", "y", "oos"]
    dm.setup("fit")
    assert len(dm.features["train"]) == 2
    assert [f["labels"] for f in dm.features["test"]] == [2, 1]


def test_carved_split_is_seeded_stratified_and_recorded(tmp_path, tiny_tokenizer):
    rows = [(w, lab) for lab in ("a", "b") for w in ("the", "bank", "of", "new", "york", "john", "smith",
                                                      "lives", "in", "paris")]
    train = write_csv(tmp_path / "train.csv", rows)
    kw = dict(train_file=train, output_dir=str(tmp_path / "out"), split_seed=7)
    dm = TextClassificationDataModule(tiny_tokenizer, **kw)
    dm.setup("fit")
    assert {s: len(v) for s, v in dm.examples.items()} == {"train": 16, "validation": 2, "test": 2}
    assert dm.files["test"] == train
    ids = json.loads((tmp_path / "out" / "split_ids.json").read_text())
    assert {k: len(v) for k, v in ids.items()} == {"train": 16, "validation": 2, "test": 2}
    again = TextClassificationDataModule(tiny_tokenizer, **{**kw, "output_dir": None})
    again.setup("fit")
    assert [e.id for e in again.examples["test"]] == ids["test"]
    assert sorted(e.label for e in again.examples["validation"]) == ["a", "b"]


def test_phrasebank_source_and_plain_text_predict_file(tmp_path, tiny_tokenizer):
    lines = [f"{w} rose @positive" for w in ("the", "bank", "of", "new")] + \
            [f"{w} fell@negative" for w in ("york", "john", "smith", "paris")] + ["sales @ home@neutral"] * 3
    (tmp_path / "Sentences_AllAgree.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "texts.txt").write_text("profit rose\n\nshares fell\n", encoding="utf-8")
    from experiments.tasks.classification.sources import PhraseBank

    dm = TextClassificationDataModule(tiny_tokenizer, source=PhraseBank(data_dir=str(tmp_path)),
                                      predict_file=str(tmp_path / "texts.txt"))
    assert dm.files["test"] == str(tmp_path)  # planned before reading: the entry point checks it
    assert dm.labels == ["negative", "neutral", "positive"]
    assert dm.files["test"] == str(tmp_path / "Sentences_AllAgree.txt")
    dm.setup("predict")
    assert [e.text for e in dm.examples["predict"]] == ["profit rose", "shares fell"]
    assert "labels" not in dm.features["predict"][0]
    # predict mode (labels given): only the predict file is read, so the training data may be absent
    only = TextClassificationDataModule(tiny_tokenizer, source=PhraseBank(data_dir=str(tmp_path / "none")),
                                        predict_file=str(tmp_path / "texts.txt"), labels=["neg", "pos"])
    only.setup("predict")
    assert set(only.features) == {"predict"}


def test_a_source_by_name_and_a_bad_source_or_fiqa_part(tiny_tokenizer):
    from experiments.errors import ConfigError
    from experiments.tasks.classification.sources import Banking77, FiQA, source_from

    assert isinstance(source_from("banking77"), Banking77)
    with pytest.raises(ConfigError, match="data.source must be one of table, phrasebank"):
        TextClassificationDataModule(tiny_tokenizer, source="imdb")
    with pytest.raises(ConfigError, match="headline and/or post"):
        FiQA(parts=["comments"])


def test_hf_rows_map_class_ids_to_names():
    from experiments.tasks.classification.datamodule import examples_from_rows

    rows = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    out = examples_from_rows(rows, where="ds[train]", text_column="sentence", label_column="label",
                             label_names=["neg", "pos"])
    assert [(e.text, e.label) for e in out] == [("good", "pos"), ("bad", "neg")]
    with pytest.raises(DataError, match="ds\\[train\\]:2"):
        examples_from_rows([{"sentence": "x", "label": 0}, {"sentence": " ", "label": 0}], where="ds[train]",
                           text_column="sentence", label_column="label")


# ------------------------------------------------------------------------- hand-worked metric values

# gold a a a b b c c c c c / predicted a a b b c c c c a c; class d is in the label set but absent.
GOLD = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
PRED = [0, 0, 1, 1, 2, 2, 2, 2, 0, 2]
# per class: a P=R=F1=2/3 (support 3); b 1/2 (support 2); c 4/5 (support 5); accuracy 7/10;
# macro over a, b, c only (d has no support and no prediction): (2/3 + 1/2 + 4/5) / 3 = 59/90;
# weighted (3 * 2/3 + 2 * 1/2 + 5 * 4/5) / 10 = 7/10.
MACRO = (2 / 3 + 1 / 2 + 4 / 5) / 3


def confusion(gold, pred, n=4):
    cm = torch.zeros(n, n, dtype=torch.long)
    for g, p in zip(gold, pred, strict=True):
        cm[g, p] += 1
    return cm


def test_single_label_scores_hand_worked_with_absent_class():
    s = M.single_label_scores(confusion(GOLD, PRED))
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["macro"]["f1"] == pytest.approx(MACRO)
    assert s["weighted"]["f1"] == pytest.approx(0.7)
    assert s["per_class"]["f1"].tolist() == pytest.approx([2 / 3, 1 / 2, 4 / 5, 0.0])
    assert s["n_macro_classes"] == 3
    # torchmetrics uses the same convention: the absent, never-predicted class is left out of the macro
    tm = MulticlassF1Score(4, average="macro")(torch.tensor(PRED), torch.tensor(GOLD))
    assert float(tm) == pytest.approx(MACRO)


def test_absent_but_predicted_class_counts_with_f1_zero():
    pred = PRED[:-1] + [3]  # last c predicted as d: c has tp 3, fp 1, fn 2 -> F1 6/9; d F1 0
    s = M.single_label_scores(confusion(GOLD, pred))
    expected = (2 / 3 + 1 / 2 + 6 / 9 + 0.0) / 4
    assert s["macro"]["f1"] == pytest.approx(expected)
    assert float(MulticlassF1Score(4, average="macro")(torch.tensor(pred), torch.tensor(GOLD))) == pytest.approx(expected)


def test_class_weights_inverse_frequency_mean_one():
    # counts 1, 2, 4 -> 1/n = 1, 1/2, 1/4 (mean 7/12) -> 12/7, 6/7, 3/7
    w = M.class_weights_from_counts([1, 2, 4])
    assert w.tolist() == pytest.approx([12 / 7, 6 / 7, 3 / 7])
    assert float(w.mean()) == pytest.approx(1.0)


def test_multilabel_threshold_tuning_hand_made():
    probs = torch.tensor([[0.9, 0.3], [0.6, 0.42], [0.2, 0.7]])
    gold = torch.tensor([[1, 0], [1, 1], [0, 1]])
    best, table = M.tune_multilabel_threshold(probs, gold)
    f1 = {round(r["threshold"], 2): r["f1_micro"] for r in table}
    assert f1[0.2] == pytest.approx(8 / 10)  # everything predicted: tp 4, fp 2
    assert f1[0.3] == pytest.approx(8 / 9)  # tp 4, fp 1
    assert f1[0.35] == f1[0.4] == pytest.approx(1.0)
    assert f1[0.5] == pytest.approx(6 / 7)  # tp 3, fn 1
    assert best == pytest.approx(0.35)  # ties go to the lowest threshold


# (max prob, argmax, gold) with 3 in-scope classes; gold 3 = oos
CLINC = [(0.93, 0, 0), (0.8, 1, 1), (0.57, 2, 2), (0.37, 0, 1), (0.42, 1, 3), (0.62, 2, 3), (0.32, 0, 3)]


def test_oos_threshold_tuning_hand_made():
    mp, am, gold = (torch.tensor(c) for c in zip(*CLINC, strict=True))
    best, table = M.tune_oos_threshold(mp.float(), am, gold, oos_index=3)
    by_t = {round(r["threshold"], 2): r for r in table}
    assert by_t[0.3]["objective"] == pytest.approx(0.75)  # nothing rejected: 3/4 in-scope, recall 0
    assert by_t[0.45]["objective"] == pytest.approx(0.75 + 2 / 3)
    assert by_t[0.6]["objective"] == pytest.approx(0.5 + 2 / 3)
    assert best == pytest.approx(0.65)  # 0.65..0.80 all give 0.5 + 1; the lowest wins
    assert by_t[0.65]["oos_precision"] == pytest.approx(3 / 5)
    pred = M.apply_oos_threshold(mp.float(), am, best, 3)
    assert pred.tolist() == [0, 1, 3, 3, 3, 3, 3]
    o = M.oos_scores(confusion(gold.tolist(), pred.tolist()), 3)
    assert o == pytest.approx({"in_scope_accuracy": 0.5, "oos_recall": 1.0, "oos_precision": 0.6})


def test_report_layout_and_png(tmp_path):
    text, _ = M.single_label_report(confusion(GOLD, PRED), ["a", "b", "c", "d"])
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[2].split() == ["a", "0.6667", "0.6667", "0.6667", "3"]
    assert "accuracy" in text and "macro avg" in text and "weighted avg" in text
    assert "macro avg over the 3 of 4 classes" in text
    fig = M.confusion_figure(confusion(GOLD, PRED), ["a", "b", "c", "d"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c", "d"]


def test_the_run_writer_gives_wandb_and_tensorboard_the_image_and_the_table(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from experiments.evaluation import EvaluationResult
    from experiments.reporting import write_evaluation

    calls = []

    class FakeWandb(WandbLogger):
        def log_image(self, key, images, **kwargs):
            calls.append(("wandb", key, type(images[0]).__name__))

        def log_table(self, key, columns, data, **kwargs):
            calls.append(("table", key, columns, data))

    class FakeWriter:
        def add_figure(self, tag, figure, global_step=None, close=True):
            calls.append(("tb", tag, global_step))

    class FakeTB(TensorBoardLogger):
        @property
        def experiment(self):
            return FakeWriter()

    fig = M.confusion_figure([[1, 0], [0, 1]], ["a", "b"])
    result = EvaluationResult("test", {"accuracy": 1.0}, report="r\n", records=[{"id": "1"}],
                              table=(["label", "f1"], [["a", 1.0]]), figures={"confusion_matrix.png": fig},
                              files={"extra.txt": "x\n"})
    written = write_evaluation(result, tmp_path, [object.__new__(FakeWandb), object.__new__(FakeTB)], step=3)
    assert {p.name for p in written} == {"classification_report.txt", "predictions.jsonl", "extra.txt",
                                         "confusion_matrix.png"}
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporary file left
    assert calls == [("wandb", "test/confusion_matrix", "Figure"),
                     ("table", "test/classification_report", ["label", "f1"], [["a", 1.0]]),
                     ("tb", "test/confusion_matrix", 3)]


# -------------------------------------------------------------------- the module on fixed logits

WORDS = ["the", "bank", "of"]  # first word -> predicted class a, b, c


def test_module_single_label_epoch_metrics_report_records_and_weights(tmp_path, tiny_tokenizer):
    texts = [WORDS[p] for p in PRED]
    labels = ["a", "b", "c", "d"]
    rows = [(f"{t} {i}", labels[g]) for i, (t, g) in enumerate(zip(texts, GOLD, strict=True))]
    train_rows = [("the", "a"), ("bank", "b"), ("bank", "b"), ("of", "d"), ("of", "d"), ("of", "d"),
                  ("of", "d"), ("the", "c")]
    train = write_csv(tmp_path / "train.csv", train_rows)
    test = write_csv(tmp_path / "test.csv", rows)
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=test, test_file=test,
                                      batch_size=2, eval_batch_size=3)  # 4 test batches: epoch-level metrics
    assert dm.labels == labels
    model = FixedLogits(tiny_tokenizer, {"the": [4, 0, 0, 0], "bank": [0, 4, 0, 0], "of": [0, 0, 4, 0]})
    mod = module(model, labels, tmp_path, class_weights="balanced")
    trainer(tmp_path, fast_dev_run=True).fit(mod, datamodule=dm)
    # train counts a 1, b 2, c 1, d 4 -> 1/n = 1, 1/2, 1, 1/4 (mean 11/16)
    assert mod.loss_weight.tolist() == pytest.approx([16 / 11, 8 / 11, 16 / 11, 4 / 11])
    trainer(tmp_path).test(mod, datamodule=dm)
    res = mod.results["test"]
    assert res.metrics["accuracy"] == pytest.approx(0.7)
    assert res.metrics["f1_macro"] == pytest.approx(MACRO)
    assert res.metrics["f1"] == pytest.approx(MACRO)
    assert res.metrics["f1_weighted"] == pytest.approx(0.7)
    assert res.details["confusion_matrix"] == confusion(GOLD, PRED).tolist()
    assert "0.6556" in res.report  # macro avg f1 in the text table
    assert set(res.figures) == {"confusion_matrix.png"} and len(res.records) == 10
    records = mod.prediction_records(dm, "test")
    assert len(records) == 10
    r = records[2]
    assert (r["id"], r["text"], r["gold"], r["predicted"]) == ("4", "bank 2", "a", "b")
    assert list(records[2]["probabilities"])[0] == "b" and len(records[2]["probabilities"]) == 4
    assert sum(records[2]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_module_multi_label_threshold_tuned_on_validation_used_on_test(tmp_path, tiny_tokenizer):
    # same hand-made case as test_multilabel_threshold_tuning_hand_made: the tuned threshold is 0.35
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    table = {"the": [logit(0.9), logit(0.3)], "bank": [logit(0.6), logit(0.42)], "of": [logit(0.2), logit(0.7)]}
    val = write_csv(tmp_path / "val.csv", [("the", "x"), ("bank", "x|y"), ("of", "y")])
    test = write_csv(tmp_path / "test.csv", [("the", "x"), ("bank", "y"), ("of", "")])
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=val, validation_file=val, test_file=test,
                                      multi_label=True, eval_batch_size=2)
    mod = module(FixedLogits(tiny_tokenizer, table), dm.labels, tmp_path, multi_label=True, threshold="tune")
    t = trainer(tmp_path)
    t.validate(mod, datamodule=dm)
    assert mod.threshold == pytest.approx(0.35)
    assert mod.results["val"].metrics["f1_micro"] == pytest.approx(1.0)
    assert mod.model.config.decision_threshold == pytest.approx(0.35)
    t.test(mod, datamodule=dm)
    # test at 0.35: predicted {x}, {x, y}, {y}; gold {x}, {y}, {} -> tp 2, fp 2, fn 0
    m = mod.results["test"].metrics
    assert m["f1_micro"] == pytest.approx(4 / 6)
    assert m["subset_accuracy"] == pytest.approx(1 / 3)
    # macro over all labels: x P 1/2 R 1 F1 2/3; y P 1/2 R 1 F1 2/3
    assert m["f1_macro"] == pytest.approx(2 / 3)
    assert m["threshold"] == pytest.approx(0.35)
    rec = mod.prediction_records(dm, "test")
    assert [r["predicted"] for r in rec] == [["x"], ["x", "y"], ["y"]]
    assert [r["gold"] for r in rec] == [["x"], ["y"], []]


def test_module_oos_threshold_tuned_on_validation(tmp_path, tiny_tokenizer):
    # CLINC's hand-made case with a fourth in-scope class d that takes part of the probability mass
    words = ["the", "bank", "of", "new", "york", "john", "smith"]
    labels = ["a", "b", "c", "d"]
    table = {}
    for w, (p, k, _) in zip(words, CLINC, strict=True):
        rest = (1 - p) / 3
        table[w] = log_probs(*[p if j == k else rest for j in range(4)])
    gold = ["a", "b", "c", "oos"]
    rows = [(w, gold[g]) for w, (_, _, g) in zip(words, CLINC, strict=True)]
    val = write_csv(tmp_path / "val.csv", rows)
    train = write_csv(tmp_path / "train.csv",
                      [("the", "a"), ("bank", "b"), ("of", "c"), ("john", "d"), ("new", "oos")])
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=train, validation_file=val, test_file=val,
                                      oos="threshold", eval_batch_size=3)
    assert dm.labels == labels
    mod = module(FixedLogits(tiny_tokenizer, table), labels, tmp_path, oos="threshold", threshold="tune")
    assert mod.eval_labels == ["a", "b", "c", "d", "oos"]
    t = trainer(tmp_path)
    t.validate(mod, datamodule=dm)
    assert mod.threshold == pytest.approx(0.65)
    t.test(mod, datamodule=dm)
    m = mod.results["test"].metrics
    assert m["in_scope_accuracy"] == pytest.approx(0.5)
    assert m["oos_recall"] == pytest.approx(1.0)
    assert m["oos_precision"] == pytest.approx(0.6)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert [r["predicted"] for r in mod.prediction_records(dm, "test")] == ["a", "b", "oos", "oos", "oos", "oos", "oos"]
    assert "in-scope accuracy 0.5000, recall 1.0000, precision 0.6000" in mod.results["test"].report
    # the threshold travels with the weights (checkpoints, ddp_spawn) and reaches the exported config
    fresh = module(FixedLogits(tiny_tokenizer, table), labels, tmp_path, oos="threshold", threshold="tune")
    assert fresh.threshold == pytest.approx(0.5)
    fresh.load_state_dict(mod.state_dict())
    assert fresh.threshold == pytest.approx(0.65)
    assert fresh.model.config.decision_threshold == pytest.approx(0.65)
