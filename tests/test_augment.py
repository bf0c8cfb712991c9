"""Augmentation: EDA keeps the words it does not delete, NER augmentation keeps valid IOB2 and the mentions'
number and types, variants are seeded, and runs augment the training split only, differently each epoch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.errors import ConfigError
from experiments.tasks.augment import EDA, NERAugment, mentions
from experiments.tasks.kshot import entity_types

words_strategy = st.lists(st.sampled_from(["the", "bank", "of", "new", "york", "rose", "fell"]), min_size=1,
                          max_size=12)


@given(words_strategy, st.integers(0, 2**32 - 1))
def test_eda_swap_permutes_and_delete_keeps_an_ordered_non_empty_subset(words, seed):
    text = " ".join(words)
    swapped = EDA(swap=0.5, delete=0.0)(text, np.random.RandomState(seed)).split()
    assert Counter(swapped) == Counter(words)
    kept = EDA(swap=0.0, delete=0.5)(text, np.random.RandomState(seed)).split()
    assert 1 <= len(kept) <= len(words)
    it = iter(words)
    assert all(any(w == x for x in it) for w in kept)  # a subsequence: order kept
    assert EDA()(text, np.random.RandomState(seed)) == EDA()(text, np.random.RandomState(seed))


def test_eda_refuses_a_probability_outside_0_1():
    with pytest.raises(ConfigError, match="data.augment.delete"):
        EDA(delete=1.5)


def test_mentions_read_conlleval_chunks():
    assert mentions(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [(0, 2, "PER"), (3, 4, "LOC"),
                                                                          (4, 5, "LOC"), (5, 6, "ORG")]


TRAIN = [(["john", "smith", "lives", "in", "paris"], ["B-PER", "I-PER", "O", "O", "B-LOC"]),
         (["bank", "of", "america", "rose"], ["B-ORG", "I-ORG", "I-ORG", "O"]),
         (["new", "york", "and", "paris"], ["B-LOC", "I-LOC", "O", "B-LOC"])]
tags_strategy = st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]), min_size=1, max_size=10)


def valid_iob2(tags: list[str]) -> bool:
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1][2:] == t[2:] and tags[i - 1] != "O")
               for i, t in enumerate(tags))


@given(tags_strategy, st.integers(0, 10_000))
def test_ner_augmentation_keeps_valid_iob2_and_the_mentions(tags, seed):
    words = [f"w{i}" for i in range(len(tags))]
    aug = NERAugment(token_replace=0.5, mention_replace=0.7).fit(TRAIN)
    new_words, new_tags = aug(words, tags, np.random.RandomState(seed))
    assert len(new_words) == len(new_tags) and valid_iob2(new_tags)
    assert [m[2] for m in mentions(new_tags)] == [m[2] for m in mentions(tags)]
    assert entity_types(new_tags) == entity_types(tags)
    assert (new_words, new_tags) == aug(words, tags, np.random.RandomState(seed))


def test_mention_replacement_draws_training_mentions_of_the_same_type():
    aug = NERAugment(token_replace=0.0, mention_replace=1.0).fit(TRAIN)
    words, tags = aug(["at", "x", "y"], ["O", "B-LOC", "I-LOC"], np.random.RandomState(0))
    assert words[0] == "at" and words[1:] in (["paris"], ["new", "york"])
    assert tags == ["O", "B-LOC"] + ["I-LOC"] * (len(words) - 2)
    words, _ = NERAugment(token_replace=1.0, mention_replace=0.0).fit(TRAIN)(
        ["x", "y"], ["B-ORG", "O"], np.random.RandomState(0))
    assert words[0] == "bank" and words[1] in {"lives", "in", "rose", "and"}  # the tokens tagged B-ORG / O


def test_a_run_augments_the_training_batches_only_and_differently_each_epoch(tmp_path, tiny_tokenizer):
    from experiments.tasks.classification.datamodule import TextClassificationDataModule

    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"the bank of new york rose {n},up\nthe bank fell {n},down\n"
                                             for n in range(6)))
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=str(data), validation_file=str(data),
                                      batch_size=4, augment=EDA(swap=0.5, delete=0.3), seed=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    plain = dm.collate([dm.features["train"][0]])["input_ids"]
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        batch = next(iter(loader))
        epochs.append(batch["input_ids"].tolist())
        assert batch["labels"].tolist() == [dm.features["train"][i]["labels"] for i in batch["example_id"].tolist()]
    assert epochs[0] != epochs[1]
    loader.sampler.set_epoch(0)
    assert next(iter(loader))["input_ids"].tolist() == epochs[0]  # the same epoch draws the same variants
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"][0].tolist()[: plain.shape[1]] == plain[0].tolist()  # evaluation never augmented


def test_augment_presets_run_end_to_end(run_cli, tmp_path):
    from test_cli import data_overrides, write_data

    metrics, _ = run_cli("debug=fast_dev_run", "augment=ner", "data.augment.token_replace=0.2",
                         *data_overrides(write_data(tmp_path / "data")))
    assert "test/f1" in metrics
    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(8)] + [f"cancel order {n},shop" for n in range(8)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    metrics, _ = run_cli("task=text_classification", f"data.train_file={tmp_path / 't.csv'}", "augment=eda",
                         "debug=fast_dev_run", "data.batch_size=4", run_dir=tmp_path / "cls")
    assert "test/accuracy" in metrics


def test_setfit_pairs_augment_each_side_of_each_pair(tmp_path, tiny_tokenizer):
    """SetFit trains one epoch over many pairs per example: augmentation must vary per pair, not per example."""
    from experiments.tasks.classification.datamodule import TextClassificationDataModule

    data = tmp_path / "train.csv"
    words = "the bank of new york rose sharply on monday after the report"
    data.write_text("text,label\n" + "".join(f"{words} {n},up\n{words} fell {n},down\n" for n in range(3)))
    dm = TextClassificationDataModule(tiny_tokenizer, train_file=str(data), validation_file=str(data),
                                      batch_size=4, augment=EDA(swap=0.0, delete=0.5), seed=3, contrastive_pairs=4)
    dm.setup("fit")
    pairs = dm.train_items()
    plain = {i: f["input_ids"] for i, f in enumerate(dm.features["train"])}
    seen: dict[int, list[list[int]]] = {}
    for start in range(0, len(pairs), 8):
        batch = dm.train_collate([(p, 0) for p in pairs[start:start + 8]])
        for row, (a, b, _) in enumerate(pairs[start:start + 8]):
            for i, key in ((a, "input_ids"), (b, "pair_input_ids")):
                ids = [t for t in batch[key][row].tolist() if t != tiny_tokenizer.pad_token_id]
                seen.setdefault(i, []).append(ids)
    # Every example occurs in several pairs; its variants differ across them and from the plain text.
    assert all(len(v) >= 2 for v in seen.values())
    assert sum(len({tuple(x) for x in v}) > 1 for v in seen.values()) >= len(seen) - 1
    assert any(v != plain[i] for i, vs in seen.items() for v in vs)
    again = dm.train_collate([(p, 0) for p in pairs[:8]])
    assert again["input_ids"].tolist() == dm.train_collate([(p, 0) for p in pairs[:8]])["input_ids"].tolist()


THESAURUS = {"bank": ["lender"], "rose": ["climbed", "went up"], "profit": ["gain"]}


def _thesaurus(tmp_path):
    import json

    path = tmp_path / "thesaurus.json"
    path.write_text(json.dumps(THESAURUS))
    return str(path)


@pytest.mark.parametrize("seed", range(20))
def test_synonym_replacement_swaps_non_stop_words_for_their_synonyms(tmp_path, seed):
    text = "the bank rose and the bank made a profit"
    out = EDA(swap=0.0, delete=0.0, synonym=1.0, thesaurus=_thesaurus(tmp_path))(
        text, np.random.RandomState(seed))
    # synonym=1.0 asks for 9 replacements; only bank, rose and profit have synonyms, so all three go, and
    # every occurrence of a replaced word takes the same synonym (EDA's sr); stop words stay.
    assert out in {"the lender climbed and the lender made a gain", "the lender went up and the lender made a gain"}


@pytest.mark.parametrize("seed", range(20))
def test_random_insertion_adds_synonyms_and_keeps_the_words_in_order(tmp_path, seed):
    text = "the bank rose on monday"
    out = EDA(swap=0.0, delete=0.0, insert=0.4, thesaurus=_thesaurus(tmp_path))(
        text, np.random.RandomState(seed)).split()
    # 0.4 * 5 words = 2 insertions of a synonym of bank or rose ("went up" is two words).
    it = iter(out)
    assert all(w in it for w in text.split())
    extra = len(out) - 5
    assert 2 <= extra <= 4
    inserted = " ".join(out)
    assert any(s in inserted for s in ("lender", "climbed", "went up"))


def test_synonym_operations_off_leave_the_old_variants_unchanged(tmp_path):
    text = "the bank of new york rose sharply on monday"
    for seed in range(10):
        assert EDA(swap=0.3, delete=0.2, thesaurus=_thesaurus(tmp_path))(text, np.random.RandomState(seed)) == \
            EDA(swap=0.3, delete=0.2)(text, np.random.RandomState(seed))


def test_synonym_operations_without_a_thesaurus_are_a_clear_error(monkeypatch, tmp_path):
    import sys

    from experiments.errors import ConfigError, DataError

    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(ConfigError, match="nltk.downloader wordnet"):
        EDA(synonym=0.1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"bank": "lender"}')
    with pytest.raises(DataError, match="list of synonym strings"):
        EDA(insert=0.1, thesaurus=str(bad))
    with pytest.raises(DataError, match="not found"):
        EDA(insert=0.1, thesaurus=str(tmp_path / "missing.json"))
