"""Shared fixtures: a tiny random BERT and its tokenizer, built offline in a temp folder.

Tests never touch the network and never need the real weights. The vocabulary holds a few whole
words plus every lowercase letter and its ``##`` continuation, so any lowercase ASCII word
tokenizes into real pieces (never all [UNK]).
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pytest

from cli_helpers import compose_config  # noqa: F401  (the one harness's composer, imported by the tests from here)

# The tokenized-feature cache of every run in the tests goes to a folder of this test session, never ~/.cache.
os.environ.setdefault("EXPERIMENTS_CACHE_DIR", tempfile.mkdtemp(prefix="experiments-cache-"))

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "bank", "of", "america", "new", "york", "john", "smith", "lives", "in", "paris",
    "works", "at", "google", "apple", "profit", "rose", "fell", "sales", "shares", "card",
    "refund", "my", "order", "cancel", "where", "is", ".", ",", "!", "?", "-",
]
LETTERS = list(string.ascii_lowercase) + list(string.digits)
VOCAB = SPECIALS + WORDS + [c for c in LETTERS if c not in WORDS] + ["##" + c for c in LETTERS]


def make_tokenizer():
    """A BertTokenizer over VOCAB (uncased). Built from a dict: see DEVELOPERS notes on vocab_file."""
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    ids = tok("bank of america")["input_ids"]
    assert tok.unk_token_id not in ids, "tiny tokenizer maps known words to [UNK]"
    return tok


def make_encoder_dir(path: Path) -> Path:
    """Save a tiny random BERT (2 layers, hidden 32, 4 heads) plus tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random BERT encoder and tokenizer, loadable by ``from_pretrained``."""
    return make_encoder_dir(tmp_path_factory.mktemp("tiny_bert"))




@pytest.fixture
def run_cli(tmp_path, tiny_encoder_dir):
    """Run the entry point in-process on the tiny BERT; returns (metrics, run_dir)."""
    from cli_helpers import run_cli as run_entry_point

    def _run(*overrides: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / "run"
        overrides = (f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "logger=csv", *overrides)
        return run_entry_point(overrides, run_dir, quick=False), run_dir

    return _run
