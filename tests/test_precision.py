"""``trainer.precision=auto`` and the bf16 path: the choice follows torch's CPU capability checks (never
/proc/cpuinfo) and a speed measured on the machine, is logged with its reason, and bf16-mixed training
stays close to fp32 on a tiny model.

The parity tolerances are stated from bf16's precision: 8 significant bits (relative rounding error
2**-8 ~ 0.4% per value), accumulated over a 2-layer encoder, so logits of size ~1 agree within 0.05 and
the loss of each of 5 training steps within 2%.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from experiments import config


@pytest.mark.parametrize("amx,avx512_bf16,speedup,expected", [
    (True, False, 1.8, "bf16-mixed"),  # AMX, and bf16 measured faster
    (False, True, 1.5, "bf16-mixed"),  # AVX512-BF16 that pays (the AMD EPYC measured 1.54x)
    (False, True, 0.5, "32"),  # AVX512-BF16 that does not (an Intel Xeon measured 0.44x)
    (False, False, 9.9, "32"),  # no bf16 units: never measured, never bf16
])
def test_auto_precision_follows_capability_checks_and_the_measured_speed(monkeypatch, amx, avx512_bf16, speedup,
                                                                        expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(config, "bf16_speedup", lambda: speedup)
    precision, why = config.auto_precision("cpu")
    assert precision == expected
    assert ("AMX" if amx else "AVX512-BF16" if avx512_bf16 else "neither") in why
    if amx or avx512_bf16:
        assert f"{speedup:.2f}x" in why


def test_bf16_speedup_is_a_positive_ratio():
    assert 0 < config.bf16_speedup(seconds=0.02) < 100


def test_the_choice_is_logged(monkeypatch, tmp_path, caplog):
    from conftest import compose_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    cfg = compose_config(["trainer.precision=auto"], output_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="experiments"):
        prepared = config.prepare(cfg)
    assert str(prepared.trainer.precision) == "32"
    assert "trainer.precision=auto: 32" in caplog.text


def _tiny_tagger(tiny_encoder_dir):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_pretrained(
        tiny_encoder_dir, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_bf16_mixed_logits_and_loss_curve_stay_close_to_fp32(tiny_encoder_dir):
    model = _tiny_tagger(tiny_encoder_dir)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (4, 12), generator=g)
    labels = torch.randint(0, 5, (4, 12), generator=g)
    with torch.no_grad():
        fp32 = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(input_ids=ids).logits.float()
    assert (bf16 - fp32).abs().max().item() < 0.05

    def curve(use_bf16: bool) -> list[float]:
        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        losses = []
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits = m(input_ids=ids).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses

    a, b = curve(False), curve(True)
    assert a[-1] < a[0]  # it trains
    assert b == pytest.approx(a, rel=0.02)
