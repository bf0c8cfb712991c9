"""What every task family shares: the training step, the optimizer and the LR schedule.

Why one base: copied training loops drift apart. A task family only says how to turn a batch into a
loss (``compute_loss``) and how to evaluate; the adversarial strategy, weight-decay groups, warmup
schedule and logging live here once. Lightning's automatic optimization is kept, so gradient
accumulation, clipping, AMP and DDP are Lightning's.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
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
        warmup_ratio: fraction of the optimizer steps used for linear warmup, rounded up (``ceil(ratio * steps)``,
            as Hugging Face's ``TrainingArguments.get_warmup_steps`` and the setfit library).
        adversary: optional FGM/PGD component (``experiments.finetune.adversarial``).
        compile: compile the network's forward with ``torch.compile`` (``nn.Module.compile``, in place, so
            checkpoints and the export keep their keys), dynamic shapes; the compile time is paid in the
            first steps. Not with an adversary, whose hooks on the embeddings would break the graph.
        finetune_name: the strategy's name (``finetune=``), stored in checkpoints with the adapter settings so
            that a checkpoint is refused by name when a run builds another strategy.

    Raises:
        ConfigError: ``compile`` together with an adversary.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: list[str],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.1,
        adversary: Any | None = None,
        compile: bool = False,
        finetune_name: str | None = None,
    ):
        super().__init__()
        # from_pretrained returns eval mode and Lightning keeps submodule modes: train with dropout.
        self.model = model.train()
        if compile:
            if adversary is not None:
                from experiments.errors import ConfigError

                raise ConfigError("module.compile=true does not work with adversarial training (FGM/PGD hook the "
                                  "embeddings inside the compiled graph); use it with finetune=full or lora")
            self.model.compile(dynamic=True)
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
        # What the checkpoint's weights are (strategy, adapter settings): stored with them, named on a mismatch.
        self.finetune: dict[str, Any] = {"name": str(finetune_name), "adapter": adapter_settings(model)}

    # ---- what a task family provides -------------------------------------------------------------
    def compute_loss(self, outputs: Any, batch: dict[str, Any]) -> Tensor:
        """Scalar loss of a forward pass on ``batch``."""
        raise NotImplementedError

    def forward_loss(self, batch: dict[str, Any]) -> Tensor:
        """Scalar training loss of ``batch``: ``compute_loss`` of one ``self.model`` forward.

        A family whose batch is not plain model input (ranking) overrides this; the override must still
        run ``self.model``'s forward, since the adversary hooks its input embeddings and calls this
        again as its loss closure.
        """
        return self.compute_loss(self.model(**model_inputs(batch)), batch)

    def count_examples(self, batch: dict[str, Any]) -> int:
        """Examples in ``batch`` (for logging)."""
        return batch["input_ids"].shape[0]

    def prediction_records(self, datamodule: Any, split: str, rows: list | None = None) -> list[dict]:
        """One JSON-able dict per example of ``split`` with its id (``predictions.jsonl``)."""
        raise NotImplementedError

    #: The :mod:`experiments.evaluation` protocol this family's datamodule implements (what it reads from it).
    data_protocol: type | None = None

    def data(self) -> Any:
        """``trainer.datamodule``, checked against :attr:`data_protocol`.

        Raises:
            ConfigError: the datamodule lacks what this family's evaluation reads (a task's module paired
                with another family's data).
        """
        dm = self.trainer.datamodule
        if self.data_protocol is not None and dm is not None and not isinstance(dm, self.data_protocol):
            from experiments.errors import ConfigError
            from experiments.evaluation import protocol_members

            missing = [n for n in protocol_members(self.data_protocol) if not hasattr(dm, n)]
            raise ConfigError(f"{type(self).__name__} evaluates with a {self.data_protocol.__name__} datamodule; "
                              f"{type(dm).__name__} lacks {', '.join(missing) or 'some of its members'}")
        return dm

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        """Score one validation/test batch (``stage``: ``val`` or ``test``) and keep what the epoch end needs."""
        raise NotImplementedError

    def reset_evaluation(self) -> None:
        """Forget what :meth:`evaluation_step` kept (called at the start of every validation/test epoch)."""

    def evaluation_epoch_end(self, stage: str) -> None:
        """Compute and log the epoch's scores over all ranks and leave an
        :class:`~experiments.evaluation.EvaluationResult` in ``self.results[stage]``."""
        raise NotImplementedError

    def predict_result(self, datamodule: Any, rows: list) -> Any:
        """The :class:`~experiments.evaluation.EvaluationResult` of a predict run (``rows``: ``predict_step``
        outputs of every rank), written by :func:`experiments.reporting.write_evaluation`."""
        from experiments.evaluation import EvaluationResult

        return EvaluationResult("predict", {}, records=self.prediction_records(datamodule, "predict", rows))

    # ---- the Lightning hooks of evaluation, the same for every family ------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.reset_evaluation()

    def on_test_epoch_start(self) -> None:
        self.reset_evaluation()

    def on_validation_epoch_end(self) -> None:
        self.evaluation_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self.evaluation_epoch_end("test")

    # ---- shared training step --------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        bs = self.count_examples(batch)
        if self.adversary is None:
            loss = self.forward_loss(batch)
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
            return loss
        with self.adversary.watch(self.model):
            clean = self.forward_loss(batch)
        adv = self.adversary.perturbed_loss(self.model, lambda: self.forward_loss(batch), clean)
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
        factory = self._optimizer_with_kernel(self.optimizer_factory)
        weight_decay = getattr(factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = factory(decay_groups(self.model, weight_decay))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)  # real optimizer steps (accumulation, limits)
        batches, accumulate = self.trainer.num_training_batches, self.trainer.accumulate_grad_batches
        if batches < accumulate:
            from experiments.errors import ConfigError

            # Lightning divides every loss by the factor, so a shorter epoch would shrink each step's gradient.
            raise ConfigError(f"an epoch has {batches} training batches, fewer than trainer.accumulate_grad_batches="
                              f"{accumulate}; set trainer.accumulate_grad_batches<={batches} or a smaller "
                              "data.batch_size (few-shot data makes short epochs)")
        scheduler = self.scheduler_factory(
            optimizer=optimizer,
            num_warmup_steps=math.ceil(self.warmup_ratio * total),
            num_training_steps=total,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _optimizer_with_kernel(self, factory: Callable[..., torch.optim.Optimizer]) -> Callable[..., Any]:
        """Resolve ``fused="auto"`` (``optimizer.fused: auto``): the fused kernel (one kernel for every
        parameter's update; measured 6-13x faster AdamW steps than ``foreach`` on a 2-core CPU, docs/performance.md)
        wherever no GradScaler runs (fp32, fp64, bf16-mixed: :meth:`configure_gradient_clipping` clips its
        gradients); ``foreach`` under fp16 mixed precision, where the scaler's unscaling happens inside the
        fused kernel, so the gradients cannot be clipped before the step."""
        keywords = dict(getattr(factory, "keywords", {}) or {})
        if keywords.get("fused") != "auto":
            return factory
        import functools

        precision = str(getattr(self.trainer, "precision", "32-true")) if self._trainer is not None else "32-true"
        fused = not precision.startswith("16")
        keywords.update(fused=True if fused else None, foreach=None if fused else True)
        return functools.partial(factory.func, *factory.args, **keywords)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Lightning's clipping, also for a fused optimizer under bf16-mixed.

        Lightning's mixed-precision plugin refuses to clip any optimizer that unscales gradients itself
        (fused AdamW), a guard meant for fp16's GradScaler. bf16 has no scaler (``plugin.scaler is None``),
        so the gradients are already true gradients and the plugin's base clipping (the same
        ``clip_grad_norm_``/``clip_grad_value_`` Lightning runs under fp32) is exact.
        """
        from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
        from lightning.pytorch.plugins.precision import MixedPrecision, Precision
        from lightning.pytorch.utilities import GradClipAlgorithmType

        plugin = self.trainer.precision_plugin
        # The same predicate as the guard it steps around (MixedPrecision.clip_gradients).
        if (gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None
                and _optimizer_handles_unscaling(optimizer)):
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, float(gradient_clip_val), algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["finetune"] = self.finetune
        if self.frozen:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in self.frozen}
        # Every rank's random state (dropout masks), so that a resumed run draws the same numbers.
        checkpoint["rng_states"] = gather_rng_states(self.trainer)

    def check_checkpoint(self, checkpoint: dict[str, Any], where: str = "checkpoint") -> None:
        """Refuse weights that do not fit this module: every key this module has and the checkpoint lacks
        must be a frozen pretrained weight (LoRA checkpoints hold only the trainable ones), and the
        checkpoint may hold no key this module lacks.

        Raises:
            ConfigError: naming the mismatch and the strategy/adapter settings of both sides.
        """
        from experiments.errors import ConfigError

        state = checkpoint.get("state_dict", {})
        own = self.state_dict()
        have, expected = set(state), set(own)
        missing = sorted(expected - have - self.frozen)
        unexpected = sorted(have - expected)
        reshaped = sorted(k for k in have & expected if hasattr(state[k], "shape")
                          and tuple(state[k].shape) != tuple(own[k].shape))
        if not missing and not unexpected and not reshaped:
            return
        stored = checkpoint.get("finetune", "not recorded")

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        problems = []
        if missing:
            problems.append(f"{len(missing)} trained weights of this model are missing ({few(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} weights are not in this model ({few(unexpected)})")
        if reshaped:
            k = reshaped[0]
            problems.append(f"{len(reshaped)} weights have other shapes ({k}: {list(state[k].shape)} in the "
                            f"checkpoint, {list(own[k].shape)} here)")
        raise ConfigError(
            f"{where} does not fit this model: {'; '.join(problems)}. The checkpoint was trained with finetune "
            f"{stored}; this run builds finetune {self.finetune}. Use the same finetune= and adapter settings"
        )

    def load_weights(self, path: str) -> None:
        """Load the weights of a checkpoint written by this module class (checked by :meth:`check_checkpoint`)."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.check_checkpoint(checkpoint, path)
        self.load_state_dict(checkpoint["state_dict"], strict=self.strict_loading)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_checkpoint(checkpoint)
        # Applied at the first training batch after the restore (see on_train_batch_start): between
        # the restore and that batch Lightning may run the sanity check, which must not shift them.
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        states, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if states:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            if len(states) == world:
                set_rng_states(states[rank])
            else:
                warnings.warn(f"checkpoint holds random states of {len(states)} processes, this run has {world}: "
                              "dropout draws differ from the interrupted run", stacklevel=1)

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts of the model."""
        return sum_params(self.model.parameters(), trainable=True), sum_params(self.model.parameters())


def adapter_settings(model: nn.Module) -> dict[str, Any] | None:
    """The peft adapter settings of ``model`` (type, ``r``, ``lora_alpha``, target modules...), or None."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    config = next(iter(configs.values()))
    keys = ("peft_type", "r", "lora_alpha", "target_modules", "modules_to_save", "num_virtual_tokens")
    out: dict[str, Any] = {}
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, set | frozenset | list | tuple):
            out[key] = sorted(str(v) for v in value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif value is not None:
            out[key] = str(value)
    return out


def sum_params(params: Iterable[nn.Parameter], trainable: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable)


def rng_states() -> dict[str, Any]:
    """This process's random states: torch CPU (and CUDA), numpy and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # Tensors, ints and tuples only: checkpoints stay loadable with torch.load(weights_only=True).
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_rng_states(trainer: Any) -> list[dict[str, Any]]:
    """Random states of every rank, index = global rank (one ``all_gather_object`` under DDP).

    Called while a checkpoint is written, which every rank does at the same point of training.
    """
    from experiments.distributed import gather_objects

    return gather_objects(rng_states(), trainer.world_size if trainer is not None else 1)
