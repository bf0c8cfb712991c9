"""A diverged run stops with a clear message (exit code 3) and keeps its last good checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from test_resume import cli_env, write_conll

# 40 sentences, batch 2: 20 steps per epoch; last.ckpt every 3 optimizer steps.
RUN = ["trainer.accelerator=cpu", "~callbacks.progress_bar", "trainer.max_epochs=1", "data.batch_size=2",
       "callbacks.last_checkpoint.every_n_train_steps=3", "callbacks.nonfinite.patience=3", "seed=5"]


def test_nan_losses_stop_the_run_and_keep_the_last_good_checkpoint(run_cli, tmp_path, monkeypatch):
    from experiments.callbacks import NonFiniteLossError
    from experiments.modules.token_classification import TokenClassificationModule

    real_loss = TokenClassificationModule.compute_loss

    def nan_from_batch_5(self, outputs, batch):
        loss = real_loss(self, outputs, batch)
        return loss * float("nan") if self.training and self.global_step >= 5 else loss

    monkeypatch.setattr(TokenClassificationModule, "compute_loss", nan_from_batch_5)
    with pytest.raises(NonFiniteLossError) as err:
        run_cli(*RUN, *write_conll(tmp_path / "data", train=40, validation=4, test=4))
    message = str(err.value)
    assert "not finite for 3 consecutive batches" in message and "callbacks.nonfinite.patience=3" in message
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(last) in message
    assert err.value.exit_code == 3

    # Batches 5, 6, 7 had NaN losses: their updates were skipped and the save due at step 6 did not
    # happen, so last.ckpt is the state after step 3, with finite weights, and it still loads.
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_nonfinite_weights_are_never_written(tmp_path):
    from lightning.pytorch import Trainer

    from experiments.callbacks import NonFiniteLossError, NonFiniteLossGuard

    guard = NonFiniteLossGuard(patience=3)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    good = {"state_dict": {"w": torch.ones(2), "step": torch.tensor(3)}}
    guard.on_save_checkpoint(trainer, None, good)
    with pytest.raises(NonFiniteLossError, match="weights are not finite"):
        guard.on_save_checkpoint(trainer, None, {"state_dict": {"w": torch.tensor([1.0, float("inf")])}})


def test_nonfinite_gradients_skip_the_update():
    from experiments.callbacks import NonFiniteLossGuard

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.tensor([1.0, float("nan"), 0.0])

    class _Trainer:
        global_step = 7

    NonFiniteLossGuard().on_before_optimizer_step(_Trainer(), None, opt)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3)) and not opt.state[w]  # untouched: no update, no moments


def test_diverging_lr_exits_with_code_3_and_one_line(tmp_path, tiny_encoder_dir):
    # lr=1e30: the first update sends the weights to ~1e30, every loss after it is NaN.
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
         "optimizer.lr=1e30", "hydra.run.dir=run", *RUN, *write_conll(tmp_path / "data", 40, 4, 4)],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "not finite for 3 consecutive batches" in error[0]
    # Diverged at the very first update and never recovered: no checkpoint was written at all.
    assert "no checkpoint was written yet" in error[0]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
