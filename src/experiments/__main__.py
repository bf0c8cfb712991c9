"""Entry point: ``python -m experiments task=... model=... finetune=...``.

Why it is the only place that instantiates: Hydra turns the config into objects here, on a few
``_target_`` nodes (datamodule, model builder, adapter, adversary, module, optimizer, scheduler,
trainer, callbacks, loggers); everything below receives typed Python objects, never a DictConfig.
Heavy libraries are imported inside ``run`` so ``--help`` stays quick.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.config import config_dir, prepare, register_resolvers, single_log_stream
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train/test/predict as ``cfg.mode`` says; returns the metrics written to ``metrics.json``."""
    import lightning as L
    from hydra.utils import instantiate

    from experiments import reporting
    from experiments.models.build import load_tokenizer

    single_log_stream()
    cfg = prepare(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
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
        rows = trainer.predict(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        path = reporting.write_jsonl(out / "predictions.jsonl", module.prediction_records(datamodule, "predict", rows))
        log.info("predictions written to %s", path)
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
    if trainer.is_global_zero:
        reporting.write_json(out / "metrics.json", metrics)
        if cfg.mode == "train" and cfg.export:
            # trainer.test loaded the best checkpoint into the module, so the best weights are exported.
            written = reporting.export_model(module.model, tokenizer, out / "model")
            log.info("model exported to %s", written)
        if "test/f1" in metrics or "test/accuracy" in metrics:
            key = "test/f1" if "test/f1" in metrics else "test/accuracy"
            print(f"{key} = {metrics[key]:.4f}   (outputs in {out})")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors become one line on stderr and exit code 2."""
    try:
        run(cfg)
    except ExperimentsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
