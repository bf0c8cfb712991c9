"""PET cloze classification on a tiny random BertForMaskedLM: the class logits are the MLM logits of the
label words at the mask (checked against the raw MLM), the run trains and exports the MLM with pet.json,
and an encoder without an MLM head, NER and bad verbalizers are clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from experiments.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    from conftest import VOCAB, make_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(config).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def test_class_logits_are_the_mlm_logits_of_the_label_words_at_the_mask(tiny_mlm_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from experiments.finetune.pet import ClozeClassifier, verbalizer_ids

    tok = AutoTokenizer.from_pretrained(tiny_mlm_dir)
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir).eval()
    ids = verbalizer_ids(tok, ["money", "shop"], {"money": "bank", "shop": "order"})
    assert ids == tok.convert_tokens_to_ids(["bank", "order"])
    model = ClozeClassifier(mlm, tok.mask_token_id, ids, "{text} it was {mask}").eval()
    batch = tok([f"refund my card it was {tok.mask_token}", f"{tok.mask_token} cancel the order"], padding=True,
                return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        raw = mlm(**batch).logits
    for row in range(2):
        pos = int((batch["input_ids"][row] == tok.mask_token_id).nonzero())
        torch.testing.assert_close(logits[row], raw[row, pos, ids])
    assert logits.shape == (2, 2)


def test_bad_verbalizers_are_refused(tiny_mlm_dir):
    from transformers import AutoTokenizer

    from experiments.finetune.pet import verbalizer_ids

    tok = AutoTokenizer.from_pretrained(tiny_mlm_dir)
    with pytest.raises(ConfigError, match="no word for label 'shop'"):
        verbalizer_ids(tok, ["money", "shop"], {"money": "bank"})
    with pytest.raises(ConfigError, match="one known token per label"):
        verbalizer_ids(tok, ["money"], {"money": "refunds"})  # r ##e ##f...: several pieces


def test_a_pet_run_trains_and_exports_the_mlm_with_pet_json(run_cli, tmp_path, tiny_mlm_dir):
    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(10)] + [f"cancel order {n},shop" for n in range(10)]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    metrics, run_dir = run_cli("task=text_classification", f"data.train_file={data}", "finetune=pet",
                               f"model.name_or_path={tiny_mlm_dir}", "finetune.adapter.verbalizer={money:bank,shop:order}",
                               "debug=limit", "data.batch_size=4")
    assert "test/accuracy" in metrics and metrics["train/trainable_params"] == metrics["train/total_params"]
    pet = json.loads((run_dir / "model" / "pet.json").read_text())
    assert pet["template"] == "{text} It was {mask}." and len(pet["label_token_ids"]) == 2
    from transformers import AutoModelForMaskedLM

    assert type(AutoModelForMaskedLM.from_pretrained(run_dir / "model")).__name__ == "BertForMaskedLM"


def test_pet_without_an_mlm_head_or_with_ner_is_a_clear_error(run_cli, tmp_path, tiny_mlm_dir):
    from test_cli import data_overrides, write_data

    data = tmp_path / "t.csv"
    data.write_text("text,label\nrefund my card,bank\ncancel order,order\n" * 5)
    with pytest.raises(ConfigError, match="has no masked-LM head"):  # the tiny BertModel: encoder weights only
        run_cli("task=text_classification", f"data.train_file={data}", "finetune=pet", "debug=fast_dev_run")
    with pytest.raises(ConfigError, match="finetune=pet is cloze classification of sentences"):
        run_cli("finetune=pet", f"model.name_or_path={tiny_mlm_dir}", "debug=fast_dev_run",
                *data_overrides(write_data(tmp_path / "d")), run_dir=tmp_path / "ner")
