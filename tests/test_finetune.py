"""Every strategy runs on the shared training step: one fast_dev_run per finetune option, and the
adversarial path under bf16 autocast with accumulation and clipping."""

from __future__ import annotations

import pytest

from test_cli import data_overrides, write_data
from test_configs import options

SENTENCES_ONLY = ("prompt_tuning", "p_tuning", "prefix_tuning", "pet", "setfit")  # test_prompt_learning, test_pet, test_setfit


@pytest.mark.parametrize("finetune", [f for f in options("finetune") if f not in SENTENCES_ONLY])
def test_ner_fast_dev_run_per_strategy(run_cli, tmp_path, finetune):
    metrics, _ = run_cli("debug=fast_dev_run", f"finetune={finetune}", *data_overrides(write_data(tmp_path / "d")))
    assert 0.0 <= metrics["test/f1"] <= 1.0
    if finetune.startswith("lora"):
        assert metrics["train/trainable_params"] < metrics["train/total_params"] / 2
    else:
        assert metrics["train/trainable_params"] == metrics["train/total_params"]


@pytest.mark.parametrize("finetune", ["fgm", "lora_fgm", "pgd"])
def test_adversarial_logs_under_bf16_accumulation_and_clipping(run_cli, tmp_path, finetune):
    _, run_dir = run_cli("debug=limit", f"finetune={finetune}", "trainer.precision=bf16-mixed",
                         "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5",
                         *data_overrides(write_data(tmp_path / "d")))
    header, *rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    for key in ("train/adv_loss", "train/clean_loss", "train/adv_skipped"):
        assert key in cols
        values = [float(r.split(",")[cols.index(key)]) for r in rows if r.split(",")[cols.index(key)]]
        assert values and all(v == v for v in values)  # logged and not NaN
