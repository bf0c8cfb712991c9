"""Entry point: ``python -m experiments task=... model=... finetune=...``.

Why it is the only place that instantiates: Hydra turns the config into objects here, on a few
``_target_`` nodes (datamodule, model builder, adapter, adversary, module, optimizer, scheduler,
trainer, callbacks, loggers); everything below receives typed Python objects, never a DictConfig.
Heavy libraries are imported inside ``run`` so ``--help`` stays quick.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.config import config_dir, prepare, register_resolvers, single_log_stream
from experiments.distributed import is_rank_zero, launch_overrides
from experiments.errors import ExperimentsError

log = logging.getLogger("experiments")
register_resolvers()


def _checkpoint_labels(ckpt_path: str) -> list[str]:
    """Label list stored in a Lightning checkpoint's hyper-parameters (weights are not unpickled)."""
    import torch

    from experiments.errors import ConfigError

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError as err:
        raise ConfigError(f"ckpt_path {ckpt_path} does not exist") from err
    except Exception as err:  # noqa: BLE001 - unpickling refused, truncated or foreign file
        raise ConfigError(
            f"{ckpt_path}: not a loadable Lightning checkpoint ({type(err).__name__}: {str(err)[:200]}); "
            "expected a .ckpt written by experiments (loaded with weights_only=True)"
        ) from None
    labels = ckpt.get("hyper_parameters", {}).get("labels")
    if not labels:
        raise ConfigError(f"{ckpt_path}: checkpoint has no label list; was it written by experiments?")
    return list(labels)


def _stored_labels(cfg: DictConfig) -> list[str] | None:
    """Labels fixed by what we evaluate or predict with, or None to read them from the training file."""
    if cfg.mode in ("predict", "test"):
        if cfg.ckpt_path:
            return _checkpoint_labels(cfg.ckpt_path)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.model.name_or_path)
        return [config.id2label[i] for i in range(config.num_labels)]
    return None


def _last_checkpoint(run_dir: Path) -> str:
    """``ckpt_path=last``: the run dir's ``checkpoints/last.ckpt`` (the newest state of that run)."""
    from experiments.errors import ConfigError

    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path=last: no checkpoint at {path}; pass the run to resume as hydra.run.dir=<its run dir>, "
            "or ckpt_path=<a .ckpt file>"
        )
    return str(path)


def _gather_ranks(trainer: Any, rows: list | None) -> list:
    """Predict outputs of every DDP rank (each predicted its own share), concatenated; rank order."""
    rows = list(rows or [])
    if trainer.world_size == 1:
        return rows
    import torch.distributed as dist

    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, rows)
    return [r for part in gathered for r in part]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train/test/predict as ``cfg.mode`` says; returns the metrics written to ``metrics.json``."""
    import lightning as L
    from hydra.utils import instantiate

    from experiments import reporting, tracking
    from experiments.models.build import load_tokenizer

    single_log_stream()
    cfg = prepare(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") == "last":
        cfg.ckpt_path = _last_checkpoint(out)
    if is_rank_zero(os.environ):  # every DDP process runs this; the trainer does not exist yet
        reporting.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    L.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(
        cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code, revision=cfg.model.revision
    )
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, labels=_stored_labels(cfg))
    labels = datamodule.labels
    adapter = instantiate(cfg.finetune.adapter) if cfg.finetune.get("adapter") else None
    model = instantiate(cfg.model)(labels=labels, adapter=adapter)
    adversary = instantiate(cfg.finetune.adversary) if cfg.finetune.get("adversary") else None
    module = instantiate(cfg.module)(
        model=model,
        labels=labels,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        adversary=adversary,
    )
    trainable, total = module.trainable_parameters()
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if cfg.mode == "predict":
        rows = _gather_ranks(trainer, trainer.predict(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path))
        if not trainer.is_global_zero:
            return {}
        path = reporting.write_jsonl(out / "predictions.jsonl", module.prediction_records(datamodule, "predict", rows))
        log.info("predictions written to %s", path)
        # Task-specific extra files (e.g. ranking: MIND's prediction.txt), when the module has them.
        if callable(write_outputs := getattr(module, "write_outputs", None)):
            log.info("written: %s", write_outputs(datamodule, "predict", out, rows))
        return {}

    metrics: dict[str, Any] = {"train/trainable_params": trainable, "train/total_params": total}
    if cfg.mode == "train":
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics["train/fit_time_s"] = round(time.perf_counter() - start, 2)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        test_ckpt = best or None
    elif cfg.mode == "test":
        test_ckpt = cfg.ckpt_path
    else:
        raise ExperimentsError(f"mode={cfg.mode!r}: expected one of train, test, predict")

    if datamodule.files.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt)
        if trainer.is_global_zero:
            result = module.results["test"]
            metrics.update(reporting.flat_metrics(trainer.callback_metrics))
            metrics["test/checkpoint"] = test_ckpt or "last weights"
            reporting.write_text(out / "classification_report.txt", result["report"])
            reporting.write_jsonl(out / "predictions.jsonl", module.prediction_records(datamodule, "test"))
            if callable(write_outputs := getattr(module, "write_outputs", None)):
                write_outputs(datamodule, "test", out)
    if trainer.is_global_zero:
        reporting.write_json(out / "metrics.json", metrics)
        if cfg.mode == "train" and cfg.export:
            # trainer.test loaded the best checkpoint into the module, so the best weights are exported.
            written = reporting.export_model(module.model, tokenizer, out / "model")
            log.info("model exported to %s", written)
        if key := next((k for k in ("test/f1", "test/accuracy", "test/auc") if k in metrics), None):
            print(f"{key} = {metrics[key]:.4f}   (outputs in {out})")
    tracking.finish(trainer, cfg, metrics)  # W&B: exported model as an artifact (if asked), close the run
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; user errors become one line on stderr and exit code 2 (3: training diverged,
    ``experiments.callbacks.NonFiniteLossError``). Returns the value of
    ``optimized_metric`` when set (Hydra's Optuna sweeper, ``hparams_search=...``)."""
    try:
        from experiments.tracking import objective

        return objective(cfg, run(cfg))
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(user_error.exit_code)


def _user_error(err: BaseException) -> ExperimentsError | None:
    """The ExperimentsError behind ``err``: itself, or the cause Hydra's InstantiationException wraps
    when a ``_target_`` constructor rejected its arguments."""
    while err is not None:
        if isinstance(err, ExperimentsError):
            return err
        err = err.__cause__
    return None


def main() -> None:
    """``python -m experiments`` and the ``experiments`` script: Hydra, after the overrides that a
    multi-process launch needs (one run dir, nothing written by ranks > 0; see ``experiments.distributed``)."""
    try:
        sys.argv[1:] = [*sys.argv[1:], *launch_overrides(sys.argv[1:], os.environ)]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
