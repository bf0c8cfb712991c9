"""Checkpointing that survives kills, and a stop on a diverged run.

Why: a run that is killed (pre-emption, OOM killer, a wall-clock limit) must resume from where it was,
so ``last.ckpt`` is written every N optimizer steps and after every validation, and no write may ever
leave a half-written file in place of the previous checkpoint. A run whose loss turned NaN must stop
with a message instead of spending hours on NaNs, and must not overwrite good weights with NaN ones.

* :class:`AtomicCheckpointIO` (``trainer.plugins``): a checkpoint is written to a temporary file in
  the same folder, flushed to disk, then renamed over the old one (``os.replace``, atomic on POSIX).
  Lightning's own ``_atomic_save`` writes the temporary file in the system temp dir and moves it, which
  is a non-atomic copy whenever that dir is on another file system (tmpfs ``/tmp``), and never fsyncs.
* :class:`LastCheckpoint` (``callbacks.last_checkpoint``): ``last.ckpt`` = the newest training state.
* :class:`ValidateBeforeEnd` (``callbacks.validate_before_end``): a run that would end before its first
  validation (``trainer.max_steps`` shorter than an epoch, ``val_check_interval`` past the end) validates
  once after its last step, so it still has scores, a best checkpoint and an export.
* :class:`NonFiniteLossGuard` (``callbacks.nonfinite``): skips updates with non-finite gradients,
  stops after ``patience`` consecutive non-finite training losses (:class:`NonFiniteLossError`, exit
  code 3) and refuses to write a checkpoint whose weights are not finite.
* :func:`progress_bar` (``callbacks.progress_bar``): Rich's live bar on a terminal; on anything else (a
  log file, CI, ``nohup``, a pipe), where a live bar shows nothing until the end, :class:`ProgressLog`
  lines every N batches and after every validation.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar

from experiments.errors import ExperimentsError
from experiments.reporting import atomic_write

log = logging.getLogger(__name__)

EXIT_NONFINITE = 3

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "NonFiniteLossGuard", "NonFiniteLossError", "ValidateBeforeEnd",
           "ProgressLog", "progress_bar", "EXIT_NONFINITE"]


class NonFiniteLossError(ExperimentsError):
    """Training diverged (NaN/inf loss or weights); the CLI exits with code 3."""

    exit_code = EXIT_NONFINITE


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.<random>.tmp`` next to the target, fsync, ``os.replace``, fsync the folder.

    A crash or kill at any moment leaves either the previous checkpoint or the new one under the final
    name, never a partial file (a stray ``.tmp`` file at worst). Remote paths (``s3://``...) and
    ``storage_options`` go to Lightning's implementation.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))


class LastCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt``: every ``train_time_interval_s`` seconds of training (default 300: a
    killed run loses at most five minutes) or, when ``every_n_train_steps`` > 0, every that many optimizer
    steps instead, and at the end of every epoch, after its validation (or after each validation run when
    validation runs within epochs). A step save that falls on the last batch of an epoch is left to the
    epoch end. The resume state holds the optimizer (3x the weights), so writing it every few steps
    costs real time; the time interval bounds that cost whatever the step time.

    Lightning's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it also saved a
    top-k checkpoint at that step, so with a monitored metric ``last.ckpt`` can be epochs old; this one
    always holds the newest state, which is what ``ckpt_path=last`` resumes from. While
    :class:`NonFiniteLossGuard` counts non-finite training losses, ``last.ckpt`` is not refreshed.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0, train_time_interval_s: float | None = 300,
                 **kwargs: Any):
        from datetime import timedelta

        # A step count, when given, replaces the time interval (Lightning takes one of the two).
        interval = (timedelta(seconds=float(train_time_interval_s))
                    if train_time_interval_s and not every_n_train_steps else None)
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps or None,
            train_time_interval=interval,
            enable_version_counter=False,
            **kwargs,
        )

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # At the last batch of an epoch the state is saved at the epoch end, after validation, instead:
        # Lightning would resume a state saved here by skipping that epoch's validation run.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and (
            self._should_save_on_train_epoch_end(trainer) or _validation_follows(trainer)
        ):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _should_skip_saving_checkpoint(self, trainer: Trainer) -> bool:
        # While the training loss is not finite the weights are suspect: keep the previous last.ckpt.
        return super()._should_skip_saving_checkpoint(trainer) or any(
            isinstance(cb, NonFiniteLossGuard) and cb.consecutive > 0 for cb in trainer.callbacks
        )

    def _save_newest(self, trainer: Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_newest(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's own on_train_end writes last.ckpt even under fast_dev_run (a full 270 MB state per check run).
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_newest(trainer)


def _validation_follows(trainer: Trainer) -> bool:
    """Whether validation runs at the end of the current training epoch."""
    num_val = trainer.num_val_batches
    if not trainer.enable_validation or not (sum(num_val) if isinstance(num_val, list) else num_val):
        return False
    every = trainer.check_val_every_n_epoch
    return every is None or (trainer.current_epoch + 1) % every == 0


def _newest_checkpoint(trainer: Trainer) -> str | None:
    paths = [
        p
        for cb in trainer.checkpoint_callbacks
        for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", ""))
        if p and os.path.isfile(p)
    ]
    return max(paths, key=os.path.getmtime) if paths else None


class NonFiniteLossGuard(Callback):
    """Stop a diverged run with a clear error instead of training on NaNs.

    * An optimizer step whose gradients are not all finite is skipped (gradients set to ``None``, so
      AdamW leaves weights and moments untouched; the LR schedule still advances), so one bad batch
      neither poisons the weights nor ends the run.
    * After ``patience`` consecutive training batches with a non-finite loss (on any rank), training
      stops with :class:`NonFiniteLossError` naming the last checkpoint written. From the first
      non-finite loss of a streak on, :class:`LastCheckpoint` does not refresh ``last.ckpt``, so it
      keeps the state from before the streak.
    * A checkpoint whose weights are not finite is never written: the save raises
      :class:`NonFiniteLossError` instead, leaving the previous checkpoint in place.

    Args:
        patience: consecutive non-finite losses tolerated before stopping (>= 1).
        skip_nonfinite_updates: skip optimizer steps with non-finite gradients (see above).
    """

    def __init__(self, patience: int = 3, skip_nonfinite_updates: bool = True):
        if int(patience) < 1:
            raise ValueError(f"callbacks.nonfinite.patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.skip_nonfinite_updates = skip_nonfinite_updates
        self.consecutive = 0
        self.skipped_updates = 0

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if not self.skip_nonfinite_updates:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # DDP has all-reduced the gradients: every rank takes the same decision. One fused norm kernel
        # over all gradients (a non-finite entry makes its tensor's norm non-finite), one host sync.
        if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            optimizer.zero_grad(set_to_none=True)
            self.skipped_updates += 1
            log.warning("non-finite gradients at global step %d: update skipped", trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        finite = not isinstance(loss, torch.Tensor) or bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.consecutive >= self.patience:
            newest = _newest_checkpoint(trainer)
            kept = f"last checkpoint (finite weights): {newest}" if newest else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"training loss was not finite for {self.consecutive} consecutive batches (epoch "
                f"{trainer.current_epoch}, batch {batch_idx}, global step {trainer.global_step}; "
                f"callbacks.nonfinite.patience={self.patience}): training stopped; {kept}. Try a lower "
                "optimizer.lr, trainer.gradient_clip_val, or trainer.precision=32 / bf16-mixed instead of 16-mixed"
            )

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        tensors = [v for v in checkpoint.get("state_dict", {}).values()
                   if isinstance(v, torch.Tensor) and v.is_floating_point()]
        finite = not tensors or bool(torch.stack([torch.isfinite(v).all() for v in tensors]).all())
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            newest = _newest_checkpoint(trainer)
            raise NonFiniteLossError(
                f"weights are not finite at epoch {trainer.current_epoch}, global step {trainer.global_step} "
                f"(training diverged): no checkpoint written over "
                f"{newest or 'the previous ones'}. Try a lower optimizer.lr or trainer.gradient_clip_val"
            )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped_updates": self.skipped_updates}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.skipped_updates = int(state_dict.get("skipped_updates", 0))


class ValidateBeforeEnd(Callback):
    """Validate once after the last training step when no validation has run during this fit.

    Without it a run that stops before its first validation (``trainer.max_steps`` below one epoch, a
    ``val_check_interval`` beyond the end, a sweep trial whose smaller batch size gave more batches per
    epoch) has no monitored metric: EarlyStopping raises, ModelCheckpoint keeps no best checkpoint and
    nothing is tested or exported. At the batch that reaches ``max_steps`` (or the last batch of the last
    epoch) it sets ``trainer.should_stop``, on which Lightning runs the validation loop before stopping.
    """

    def __init__(self) -> None:
        self.validated = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.validated = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.validated or not trainer.enable_validation or trainer.should_stop:
            return
        num_val = trainer.num_val_batches
        if not (sum(num_val) if isinstance(num_val, list) else num_val):
            return
        at_max_steps = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        last_epoch = trainer.max_epochs is not None and trainer.max_epochs > 0 and (
            trainer.current_epoch + 1 >= trainer.max_epochs)
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        follows = last_batch and _validation_follows(trainer)
        if not follows and (at_max_steps or (last_epoch and last_batch)):
            log.info("no validation has run yet: validating once before training ends (global step %d)",
                     trainer.global_step)
            trainer.should_stop = True


def progress_bar(style: str = "auto", refresh_rate: int = 1, every_n_steps: int = 50) -> ProgressBar:
    """The progress display (``callbacks.progress_bar``).

    Args:
        style: ``rich`` (Lightning's ``RichProgressBar``), ``log`` (:class:`ProgressLog`) or ``auto``:
            ``rich`` when standard output is a terminal, else ``log``.
        refresh_rate: the Rich bar's refreshes per second.
        every_n_steps: training batches between two :class:`ProgressLog` lines.

    Raises:
        ConfigError: another ``style``.
    """
    if style not in ("auto", "rich", "log"):
        from experiments.errors import ConfigError

        raise ConfigError(f"callbacks.progress_bar.style={style!r}: expected auto, rich or log")
    if style == "rich" or (style == "auto" and sys.stdout.isatty()):
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(refresh_rate=refresh_rate)
    return ProgressLog(every_n_steps=every_n_steps)


class ProgressLog(ProgressBar):
    """Progress as ``logging`` lines (logger ``experiments.callbacks``, so also in the run's log file):
    every ``every_n_steps`` training batches the epoch, the batch, the running ``train/loss`` and the
    elapsed time; after every validation (not the sanity check) its ``val/...`` metrics; at each epoch
    end the epoch's wall time. The progress display of Hugging Face's Trainer on a non-terminal console
    (its ``logging_steps`` lines) is the model.

    Raises:
        ValueError: ``every_n_steps`` below 1.
    """

    def __init__(self, every_n_steps: int = 50):
        super().__init__()
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: expected at least 1")
        self.every_n_steps = int(every_n_steps)
        self._enabled = True
        self._start = self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _epoch(self, trainer: Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._enabled or (batch_idx + 1) % self.every_n_steps:
            return
        total = self.total_train_batches
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        loss_text = f", train/loss {float(loss):.4f}" if loss is not None else ""
        log.info("%s, batch %d/%s%s, %.0f s", self._epoch(trainer), batch_idx + 1,
                 total if total != float("inf") else "?", loss_text, time.perf_counter() - self._start)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        scores = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
        if scores:
            log.info("%s, validation: %s", self._epoch(trainer),
                     ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled:
            log.info("%s done in %.0f s", self._epoch(trainer), time.perf_counter() - self._epoch_start)
