"""K-shot draws: exact counts per class, nesting across K, determinism, a disjoint dev draw, the greedy NER
draw's guarantee, the runs that record them, and the refusal of epochs shorter than the accumulation."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.errors import ConfigError
from experiments.tasks.kshot import entity_types, kshot_indices, kshot_ner_indices

labels_strategy = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=60)


@given(labels_strategy, st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_exactly_min_k_and_class_size_per_class(labels, k, seed):
    train, _ = kshot_indices(labels, k, seed)
    got = Counter(labels[i] for i in train)
    for label, n in Counter(labels).items():
        assert got[label] == min(k, n)


@given(labels_strategy, st.integers(1, 8), st.integers(0, 1000))
def test_the_small_draw_is_inside_the_large_one_and_the_same_every_time(labels, k, seed):
    small, _ = kshot_indices(labels, k, seed)
    large, _ = kshot_indices(labels, 2 * k, seed)
    assert set(small) <= set(large)
    assert kshot_indices(labels, k, seed) == (small, _)


@given(labels_strategy, st.integers(1, 5), st.integers(1, 5), st.integers(0, 1000))
def test_the_dev_draw_is_disjoint_and_counted(labels, k, dev_k, seed):
    train, dev = kshot_indices(labels, k, seed, dev=dev_k)
    assert not set(train) & set(dev)
    got = Counter(labels[i] for i in dev)
    for label, n in Counter(labels).items():
        assert got[label] == min(dev_k, max(0, n - k))


def test_a_draw_does_not_depend_on_other_classes():
    a = kshot_indices(["x", "y", "x", "y", "x"], 1, 3)[0]
    b = kshot_indices(["x", "z", "x", "z", "x", "z"], 1, 3)[0]
    assert [i for i in a if i % 2 == 0] == [i for i in b if i % 2 == 0]  # the x's, same positions


def test_bad_k_and_seed_are_refused():
    for k in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            kshot_indices(["a"], k, 0)
    with pytest.raises(ValueError, match="seed"):
        kshot_indices(["a"], 1, -1)


def test_entity_types_count_mentions_as_conlleval_chunks():
    assert entity_types(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]) == Counter(PER=2, LOC=2)


tags_strategy = st.lists(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]), min_size=1,
                                  max_size=6), min_size=1, max_size=40)


@given(tags_strategy, st.integers(1, 4), st.integers(0, 1000))
def test_greedy_ner_draw_reaches_k_mentions_of_every_type_it_can(tags, k, seed):
    chosen = kshot_ner_indices(tags, k, seed)
    assert chosen == kshot_ner_indices(tags, k, seed) and len(set(chosen)) == len(chosen)
    got, available = Counter(), Counter()
    for i, t in enumerate(tags):
        available.update(entity_types(t))
        if i in chosen:
            got.update(entity_types(t))
    for typ, n in available.items():
        assert got[typ] >= min(k, n)
    assert all(entity_types(tags[i]) for i in chosen)  # a sentence without entities never helps
    assert not set(kshot_ner_indices(tags, k, seed, exclude=chosen)) & set(chosen)


def test_a_k_shot_classification_run_trains_on_the_draw_and_records_it(run_cli, tmp_path):
    rows = ["text,label"] + [f"{w} {n},{lab}" for n in range(20) for w, lab in
                             (("refund", "money"), ("card", "card"), ("order", "shop"))]
    data = tmp_path / "train.csv"
    data.write_text("\n".join(rows) + "\n")
    _, run_dir = run_cli("task=text_classification", f"data.train_file={data}", "data.k_shot=4",
                         "data.k_shot_seed=7", "data.k_shot_dev=2", "debug=fast_dev_run", "data.batch_size=4")
    ids = json.loads((run_dir / "kshot_ids.json").read_text())
    assert len(ids["train"]) == 12 and len(ids["validation"]) == 6 and not set(ids["train"]) & set(ids["validation"])
    split = json.loads((run_dir / "split_ids.json").read_text())
    assert set(ids["train"]) | set(ids["validation"]) <= set(split["train"])  # drawn from the training pool
    assert not set(ids["train"]) & set(split["test"])


def test_a_k_shot_ner_run_and_the_short_epoch_refusal(run_cli, tmp_path, caplog):
    from test_cli import data_overrides, write_data

    files = write_data(tmp_path / "data")
    _, run_dir = run_cli("debug=fast_dev_run", *data_overrides(files), "data.k_shot=1")
    ids = json.loads((run_dir / "kshot_ids.json").read_text())
    assert len(ids["train"]) < 3
    # The feature cache keeps the draw apart: a full run on the same files then encodes all 3 sentences.
    with caplog.at_level(logging.INFO, logger="experiments.tasks.ner.datamodule"):
        run_cli("debug=fast_dev_run", *data_overrides(files), run_dir=tmp_path / "full")
    assert any(r.getMessage().startswith("train: 3 sentences, 3 windows") for r in caplog.records)
    with pytest.raises(ConfigError, match="fewer than trainer.accumulate_grad_batches=4"):
        run_cli("trainer.max_epochs=1", *data_overrides(files), "data.k_shot=1", "data.batch_size=8",
                "trainer.accumulate_grad_batches=4", run_dir=tmp_path / "short")


def test_the_schedule_spans_exactly_the_optimizer_steps_taken(tmp_path, tiny_encoder_dir, tiny_tokenizer):
    """K-shot epochs are short: the warmup/decay schedule must be sized by real optimizer steps (accumulation
    and epochs included), or the learning rate never decays (too many) or sits at 0 (too few)."""
    import functools

    import lightning as L
    import torch
    from transformers import get_scheduler

    from experiments.models.build import build_model
    from experiments.modules.sequence_classification import SequenceClassificationModule
    from experiments.tasks.classification.datamodule import TextClassificationDataModule

    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(6)] + [f"cancel order {n},shop" for n in range(6)]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=str(data), validation_file=str(data),
                                      k_shot=4, batch_size=3)
    seen: dict[str, int] = {}

    def scheduler(optimizer, num_warmup_steps, num_training_steps):
        seen["total"], seen["warmup"] = num_training_steps, num_warmup_steps
        return get_scheduler("linear", optimizer, num_warmup_steps=num_warmup_steps,
                             num_training_steps=num_training_steps)

    labels = dm.labels
    module = SequenceClassificationModule(
        model=build_model(str(tiny_encoder_dir), head="sequence_classification", labels=labels), labels=labels,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), scheduler=scheduler)
    trainer = L.Trainer(max_epochs=3, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    # 8 examples (K=4, 2 classes), batches of 3 -> 3 batches per epoch; accumulating 2 -> 2 optimizer steps per
    # epoch (Lightning steps on the epoch's last, partial accumulation too) -> 6 over 3 epochs.
    assert trainer.global_step == 6
    assert seen["total"] == 6
    # warmup_ratio 0.1 of 6 steps rounds up to 1, as in HF TrainingArguments.get_warmup_steps (ceil) and setfit.
    assert seen["warmup"] == 1
    assert module.lr_schedulers().get_last_lr()[0] == 0.0  # the linear decay ends exactly at the last step
