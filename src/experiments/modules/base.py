"""What every task family shares: the training step, the optimizer and the LR schedule.

Why one base: copied training loops drift apart. A task family only says how to turn a batch into a
loss (``compute_loss``) and how to evaluate; the adversarial strategy, weight-decay groups, warmup
schedule and logging live here once. Lightning's automatic optimization is kept, so gradient
accumulation, clipping, AMP and DDP are Lightning's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

# Batch keys that are bookkeeping, not model inputs.
META_KEYS = frozenset({"labels", "example_id", "word_index"})


def model_inputs(batch: dict[str, Any]) -> dict[str, Tensor]:
    """The part of a collated batch that the Hugging Face model's ``forward`` takes."""
    return {k: v for k, v in batch.items() if k not in META_KEYS}


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases and LayerNorm weights (BERT recipe).

    Only parameters with ``requires_grad`` are returned (LoRA freezes the rest).
    Source: Devlin et al. 2019 / Hugging Face Trainer ``get_decay_parameter_names``.
    """
    decay, no_decay = [], []
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.LayerNorm) or "norm" in type(m).__name__.lower()
        for p in m.parameters(recurse=False)
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or id(p) in norm_ids else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class EncoderModule(L.LightningModule):
    """Base LightningModule: a Hugging Face model plus the shared optimisation recipe.

    Args:
        model: the network from ``experiments.models.build.build_model``.
        labels: label names (index = class id); stored in checkpoints for predict mode.
        optimizer: ``functools.partial`` of a torch optimizer taking parameter groups
            (Hydra ``_partial_: true``); its ``weight_decay`` is applied to non-bias, non-norm weights.
        scheduler: partial of ``transformers.get_scheduler`` taking ``optimizer``,
            ``num_warmup_steps`` and ``num_training_steps``; stepped every optimizer step.
        warmup_ratio: fraction of the optimizer steps used for linear warmup.
        adversary: optional FGM/PGD component (``experiments.finetune.adversarial``).
    """

    def __init__(
        self,
        model: nn.Module,
        labels: list[str],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.1,
        adversary: Any | None = None,
    ):
        super().__init__()
        # from_pretrained returns eval mode and Lightning keeps submodule modes: train with dropout.
        self.model = model.train()
        self.labels = list(labels)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        self.adversary = adversary
        self.save_hyperparameters({"labels": self.labels, "warmup_ratio": warmup_ratio})
        # Checkpoints hold trainable weights only (LoRA: adapter + head); frozen ones come from the
        # pretrained model, so loading is non-strict exactly when some weights are frozen.
        self.frozen = {f"model.{n}" for n, p in model.named_parameters() if not p.requires_grad}
        self.strict_loading = not self.frozen

    # ---- what a task family provides -------------------------------------------------------------
    def compute_loss(self, outputs: Any, batch: dict[str, Any]) -> Tensor:
        """Scalar loss of a forward pass on ``batch``."""
        raise NotImplementedError

    # ---- shared training step --------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        inputs = model_inputs(batch)
        bs = inputs["input_ids"].shape[0]
        if self.adversary is None:
            loss = self.compute_loss(self.model(**inputs), batch)
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
            return loss
        with self.adversary.watch(self.model):
            clean = self.compute_loss(self.model(**inputs), batch)
        adv = self.adversary.perturbed_loss(
            self.model, lambda: self.compute_loss(self.model(**inputs), batch), clean
        )
        loss = clean if adv is None else clean + self.adversary.adv_weight * adv
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/clean_loss", clean, on_step=False, on_epoch=True, batch_size=bs)
        if adv is not None:
            self.log("train/adv_loss", adv, on_step=False, on_epoch=True, batch_size=bs)
        self.log("train/adv_skipped", float(self.adversary.skipped), on_step=False, on_epoch=True,
                 reduce_fx="max", batch_size=bs)
        return loss

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer given to the module")
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(decay_groups(self.model, weight_decay))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(
            optimizer=optimizer,
            num_warmup_steps=int(self.warmup_ratio * total),
            num_training_steps=total,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.frozen:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in self.frozen}

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts of the model."""
        return sum_params(self.model.parameters(), trainable=True), sum_params(self.model.parameters())


def sum_params(params: Iterable[nn.Parameter], trainable: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable)
