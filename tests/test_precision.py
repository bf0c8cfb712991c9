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


def _clipped_norms(tiny_encoder_dir, precision: str, clip: float | None) -> tuple[list[float], dict]:
    """Train 3 steps through Lightning; the total gradient norm each optimizer step sees (after clipping)."""
    import functools

    import lightning as L

    from experiments.modules.token_classification import TokenClassificationModule

    torch.manual_seed(0)
    module = TokenClassificationModule(
        model=_tiny_tagger(tiny_encoder_dir), labels=["O", "B-X", "I-X", "B-Y", "I-Y"],
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, fused="auto"))
    g = torch.Generator().manual_seed(2)
    batches = [{"input_ids": torch.randint(5, 60, (4, 12), generator=g),
                "attention_mask": torch.ones(4, 12, dtype=torch.long),
                "labels": torch.randint(0, 5, (4, 12), generator=g)} for _ in range(3)]
    norms: list[float] = []
    seen: dict = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            opt = trainer.optimizers[0]
            seen.update(fused=opt.defaults.get("fused"), foreach=opt.defaults.get("foreach"))

            # Lightning runs forward, backward and clipping in the closure inside step(): read after it.
            def after_step(optimizer, args, kwargs):
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])).item())
            opt.register_step_post_hook(after_step)

    trainer = L.Trainer(accelerator="cpu", precision=precision, gradient_clip_val=clip, max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Spy()])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return norms, seen


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_gradients_are_clipped_without_a_grad_scaler(tiny_encoder_dir, precision):
    # bf16 and fp32 run no GradScaler, so the fused AdamW kernel is chosen and Lightning's norm clipping
    # still runs before each step: every step sees a total norm of at most the clip value.
    clip = 1e-3
    free, _ = _clipped_norms(tiny_encoder_dir, precision, None)
    assert min(free) > 10 * clip  # without clipping the norm is far above it, so the bound below can fail
    norms, seen = _clipped_norms(tiny_encoder_dir, precision, clip)
    assert seen["fused"] is True and not seen["foreach"]
    assert len(norms) == 3 and max(norms) <= clip * 1.01


def test_bf16_speedup_reads_the_free_cpu_through_a_burst_of_other_work(monkeypatch):
    """A fake layer on a fake clock: fp32 calls cost 2 units, bf16 calls 1, so the true ratio is 2.0; another
    job makes every call 5x slower while the clock is below 40 units (the first rounds). The measurement
    must still read 2.0 (one block per precision, as before, read the burst as a speed difference)."""
    import time

    import torch

    clock = [0.0]

    class FakeLinear:
        def __init__(self, *shape):
            pass

        def __call__(self, x):
            cost = 1.0 if torch.is_autocast_enabled("cpu") else 2.0
            clock[0] += cost * (5.0 if clock[0] < 40.0 else 1.0)

    monkeypatch.setattr(torch.nn, "Linear", FakeLinear)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    assert config.bf16_speedup.__wrapped__(seconds=50.0) == pytest.approx(2.0)
