"""LoRA: export round trips (adapter reload and merged model give the trained model's logits), the
head is trained and saved, and checkpoints hold only trainable weights."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForTokenClassification

from experiments.models.build import build_model
from experiments.reporting import export_model
from test_cli import data_overrides, write_data

LABELS = ["O", "B-PER", "I-PER"]


def trained_lora(tiny_encoder_dir):
    model = build_model(str(tiny_encoder_dir), head="token_classification", labels=LABELS,
                        adapter=LoraConfig(r=4, lora_alpha=8, target_modules=None))
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: LoRA B starts at zero, so make it matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def test_lora_targets_query_and_value_and_trains_the_head(tiny_encoder_dir):
    model = trained_lora(tiny_encoder_dir)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key.lora" in n for n in trainable)
    assert any("classifier" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)


def test_adapter_reload_and_merged_model_match_in_memory_logits(tiny_encoder_dir, tiny_tokenizer, tmp_path):
    model = trained_lora(tiny_encoder_dir)
    batch = tiny_tokenizer(["john smith lives in paris", "the bank"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits
    written = export_model(model, tiny_tokenizer, tmp_path / "model")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, expected)  # export leaves the adapter in place

        base = AutoModelForTokenClassification.from_pretrained(tiny_encoder_dir, num_labels=len(LABELS))
        reloaded = PeftModel.from_pretrained(base, written["adapter"]).eval()
        assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-5)

        merged = AutoModelForTokenClassification.from_pretrained(written["model"]).eval()
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(**batch).logits, expected, atol=1e-5)
        assert merged.config.id2label == dict(enumerate(LABELS))


def test_lora_checkpoint_is_a_small_fraction_of_full(run_cli, tmp_path):
    files = write_data(tmp_path / "data")
    sizes = {}
    for finetune in ("full", "lora"):
        metrics, run_dir = run_cli("debug=limit", f"finetune={finetune}", *data_overrides(files),
                                   run_dir=tmp_path / finetune)
        sizes[finetune] = (run_dir / "checkpoints" / "last.ckpt").stat().st_size
        assert "test/f1" in metrics  # the best checkpoint loaded back (non-strict under LoRA)
    # Full: all weights + 2 Adam moments. LoRA: adapter + head + their moments.
    assert sizes["lora"] < 0.2 * sizes["full"], sizes
    assert (tmp_path / "lora" / "model_adapter" / "adapter_config.json").exists()
    assert (tmp_path / "lora" / "model" / "config.json").exists()
