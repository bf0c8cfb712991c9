"""Experiment tracking: the validation history every run keeps, and what a W&B run gets.

Why a callback: W&B wants things that only exist while the trainer runs (the resolved config, the
test report, the per-type scores), and a callback gets them without touching the task modules.
:class:`Tracking` does two jobs:

* always, on every validation end: appends the ``val/...`` metrics to ``val_history.json`` in the
  run dir, so that sweeps (``experiments.sweep``, Hydra's Optuna sweeper through
  :func:`objective`) read the best validation score of a run whatever loggers it used;
* with a ``WandbLogger`` attached (``logger=wandb``, or a list holding it): logs the resolved config
  as a plain dict. (The test report table and the figures reach W&B through the run writer,
  :func:`experiments.reporting.write_evaluation`.)

:func:`finish` runs at the end of ``experiments.__main__.run``: it logs the exported model as a W&B
artifact when ``callbacks.tracking.log_export=true`` and closes the W&B run, so that several runs in
one process (Hydra multirun, tests) each get their own W&B run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from experiments import reporting
from experiments.errors import ConfigError
from experiments.history import HISTORY_FILE, number, read_history  # noqa: F401

log = logging.getLogger(__name__)

def wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The ``WandbLogger`` instances among ``loggers`` (W&B is imported only if Lightning's logger is)."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


class Tracking(Callback):
    """Keeps ``val_history.json`` and, with a ``WandbLogger``, sends the resolved config to W&B.

    Args:
        config: the run's config as a plain dict (the same as ``<run dir>/config.yaml``), logged to W&B;
            the entry point sets it after building the callbacks (``None``: nothing is logged).
        history_file: where the validation history goes (null: not kept).
        log_export: log the exported model folder as a W&B artifact (type ``model``) after export.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        history_file: str | None = None,
        log_export: bool = False,
    ):
        self.config = config
        self.history_file = history_file
        self.log_export = log_export
        self.history: list[dict[str, float]] = []
        self._config_logged = False

    # ---- config ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._config_logged or not trainer.is_global_zero:
            return
        loggers = wandb_loggers(trainer.loggers)
        if not loggers or self.config is None:
            return
        for lg in loggers:
            lg.log_hyperparams(self.config)
        self._config_logged = True

    # ---- validation history ------------------------------------------------------------------------
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, where the epoch-level scores are logged.
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            value = number(value)
            if key.startswith("val/") and value is not None:
                row[key] = value
        self.history.append(row)
        if self.history_file:
            reporting.write_json(self.history_file, {"history": self.history})


def _artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def finish(trainer: L.Trainer, cfg: Any, metrics: Mapping[str, Any] | None = None, failed: bool = False) -> None:
    """End of a run: log the exported model as a W&B artifact if asked, then close the W&B runs.

    Called in a ``finally`` by the entry point, so a run that raised (diverged, refused input) still closes
    its W&B run, marked failed (exit code 1), and the next job of a multirun gets a new one.
    """
    loggers = [lg for lg in wandb_loggers(trainer.loggers) if getattr(lg, "_experiment", None) is not None]
    if not loggers or not trainer.is_global_zero:
        return
    if failed:
        for lg in loggers:
            lg.experiment.finish(exit_code=1)
            lg._experiment = None
        return
    tracking = next((cb for cb in trainer.callbacks if isinstance(cb, Tracking)), None)
    out = Path(cfg.paths.output_dir)
    model_dir = out / "model"
    if tracking is not None and tracking.log_export and cfg.get("mode") == "train" and model_dir.is_dir():
        import wandb

        meta = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        for lg in loggers:
            artifact = wandb.Artifact(
                _artifact_name(f"{cfg.get('run_name') or 'model'}-export"),
                type="model",
                metadata={"run_dir": str(out), **meta},
            )
            artifact.add_dir(str(model_dir))
            adapter = out / "model_adapter"
            if adapter.is_dir():
                artifact.add_dir(str(adapter), name="adapter")
            lg.experiment.log_artifact(artifact, aliases=["latest", "exported"])
            log.info("exported model logged to W&B as artifact %s", artifact.name)
    for lg in loggers:
        lg.experiment.finish()
        lg._experiment = None


# ---- the value a Hydra sweeper optimises -----------------------------------------------------------
def metric_goal(name: str, cfg: Any = None) -> str:
    """``maximize`` or ``minimize`` for a metric: the monitor's mode for the monitored metric, else
    ``minimize`` for losses and errors and ``maximize`` for everything else."""
    monitor = (cfg.get("monitor") if cfg is not None else None) or {}
    if monitor and monitor.get("metric") == name:
        return "minimize" if monitor.get("mode") == "min" else "maximize"
    return "minimize" if re.search(r"loss|error|perplexity|mse|mae", name) else "maximize"


def best_value(values: Sequence[float], goal: str) -> float | None:
    if not values:
        return None
    return min(values) if goal.startswith("min") else max(values)


def objective(cfg: Any, metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None
              ) -> float | None:
    """Value of ``cfg.optimized_metric`` for Hydra sweepers (Optuna), or None when it is not set.

    A key of ``metrics`` (``test/...``) is returned as is; a validation metric (``val/f1``) gives its
    best value (:func:`metric_goal`) over ``history``, the rows the run's :class:`Tracking` callback kept in
    memory, or, without them, over the history the run left on disk (:func:`read_history`).

    Raises:
        ConfigError: the metric was never logged by this run.
    """
    name = cfg.get("optimized_metric") if cfg is not None else None
    if not name:
        return None
    if name in metrics and number(metrics[name]) is not None:
        return number(metrics[name])
    values = [number(row[name]) for row in history or () if number(row.get(name)) is not None]
    value = best_value(values or read_history(cfg.paths.output_dir, name), metric_goal(name, cfg))
    if value is None:
        raise ConfigError(f"optimized_metric={name} was not logged by this run (see {cfg.paths.output_dir})")
    return value
