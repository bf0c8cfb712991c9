"""Prompt learning through peft on the sentence-classification family: trainable sizes worked out by hand,
the virtual tokens under the attention mask (padding changes nothing), the adapter export reloaded by peft,
and the clear errors for NER and for prefix tuning."""

from __future__ import annotations

import json

import pytest
import torch

from experiments.errors import ConfigError

HIDDEN, LABELS = 32, 2  # the tiny BERT of conftest; two classes below


def write_table(path):
    rows = ["text,label"] + [f"refund {n} my card,money" for n in range(10)] + [f"cancel order {n},shop" for n in range(10)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("finetune,prompt_params", [
    ("prompt_tuning", 20 * HIDDEN),
    # P-tuning's MLP encoder: embedding 20 x 32, then 32 -> 128 -> 128 -> 32 (weights and biases).
    ("p_tuning", 20 * HIDDEN + (HIDDEN * 128 + 128) + (128 * 128 + 128) + (128 * HIDDEN + HIDDEN)),
])
def test_prompt_learning_trains_only_the_prompt_and_the_head_and_exports_an_adapter(run_cli, tmp_path, finetune,
                                                                                  prompt_params):
    data = write_table(tmp_path / "t.csv")
    metrics, run_dir = run_cli("task=text_classification", f"data.train_file={data}", f"finetune={finetune}",
                               "debug=limit", "data.batch_size=4")
    head = HIDDEN * LABELS + LABELS  # the classifier (peft keeps the pretrained pooler frozen)
    assert metrics["train/trainable_params"] == prompt_params + head
    assert "test/accuracy" in metrics
    assert not (run_dir / "model").exists()
    adapter = run_dir / "model_adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["num_virtual_tokens"] == 20

    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    model = AutoPeftModelForSequenceClassification.from_pretrained(adapter).eval()
    tok = AutoTokenizer.from_pretrained(adapter)
    one = tok(["refund my card"], return_tensors="pt")
    padded = tok(["refund my card", "cancel my order now please refund"], padding=True, return_tensors="pt")
    with torch.no_grad():
        alone = model(**one).logits[0]
        in_batch = model(**padded).logits[0]
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # the first row is padded
    torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-5)  # masked padding changes nothing


def test_prompt_learning_with_ner_and_prefix_tuning_are_clear_errors(run_cli, tmp_path):
    from test_cli import data_overrides, write_data

    with pytest.raises(ConfigError, match="prompt learning .* is for sentence classification"):
        run_cli("debug=fast_dev_run", "finetune=prompt_tuning", *data_overrides(write_data(tmp_path / "d")))
    with pytest.raises(ConfigError, match="finetune=prefix_tuning cannot be applied.*use finetune=prompt_tuning"):
        run_cli("task=text_classification", f"data.train_file={write_table(tmp_path / 't.csv')}",
                "finetune=prefix_tuning", "debug=fast_dev_run", run_dir=tmp_path / "prefix")
