"""The tokenized-feature cache: a second identical setup reads the cache; any change of file, tokenizer or
option misses it; a damaged cache file is recomputed."""

from __future__ import annotations

import pytest

from experiments.tasks.ner import datamodule as ner_dm
from experiments.tasks.ner.datamodule import NERDataModule
from test_cli import write_data


def _dm(files, tok, cache, **kw):
    return NERDataModule(tok, train_file=str(files["train"]), validation_file=str(files["validation"]),
                         test_file=str(files["test"]), cache_dir=str(cache), **kw)


def test_second_setup_reads_the_cache_and_changes_miss_it(tmp_path, tiny_tokenizer, monkeypatch):
    files = write_data(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _dm(files, tiny_tokenizer, cache)
    first.setup("fit")
    assert len(list(cache.glob("*.pt"))) == 3  # train, validation, test

    calls = []
    real = ner_dm.encode_sentence
    monkeypatch.setattr(ner_dm, "encode_sentence", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = _dm(files, tiny_tokenizer, cache)
    again.setup("fit")
    assert not calls  # every split from the cache
    assert again.features == first.features

    _dm(files, tiny_tokenizer, cache, max_length=16).setup("fit")  # another option: encoded again
    assert calls
    calls.clear()
    files["test"].write_text(files["test"].read_text() + "\njohn B-PER\n")  # another file content
    _dm(files, tiny_tokenizer, cache).setup("test")
    assert calls


def test_a_damaged_cache_file_is_recomputed(tmp_path, tiny_tokenizer):
    files = write_data(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _dm(files, tiny_tokenizer, cache)
    first.setup("fit")
    for f in cache.glob("*.pt"):
        f.write_bytes(b"not a cache file")
    again = _dm(files, tiny_tokenizer, cache)
    again.setup("fit")
    assert again.features == first.features


def test_no_cache_dir_means_no_files(tmp_path, tiny_tokenizer):
    files = write_data(tmp_path / "data")
    dm = NERDataModule(tiny_tokenizer, train_file=str(files["train"]), validation_file=str(files["validation"]))
    dm.setup("fit")
    assert dm.features["train"]
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("name", ["a", "b"])
def test_tokenizer_fingerprint_differs_with_the_vocabulary(tiny_tokenizer, name):
    from transformers import BertTokenizerFast

    from conftest import VOCAB
    from experiments.tasks.base import tokenizer_fingerprint

    other = BertTokenizerFast(vocab={t: i for i, t in enumerate([*VOCAB, f"extra{name}"])})
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tiny_tokenizer)


def test_tokenizer_fingerprint_ignores_call_time_truncation(tiny_tokenizer):
    from experiments.tasks.base import tokenizer_fingerprint

    before = tokenizer_fingerprint(tiny_tokenizer)
    tiny_tokenizer(["the bank"], truncation=True, max_length=3)
    tiny_tokenizer(["the bank"], truncation=False)
    assert tokenizer_fingerprint(tiny_tokenizer) == before
