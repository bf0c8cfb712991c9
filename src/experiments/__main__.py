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
from experiments.errors import EXIT_USER_ERROR, ConfigError, ExperimentsError

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
    from experiments.distributed import gather_objects

    return [r for part in gather_objects(list(rows or []), trainer.world_size) for r in part]


def _train_labels(cfg: DictConfig, datamodule: Any) -> list[str]:
    """The data's labels in the order of the model's trained head, when training starts from a model
    that is already fine-tuned (``experiments.models.build.reconcile_labels``)."""
    labels = datamodule.labels
    if cfg.mode != "train" or cfg.model.get("head") not in ("token_classification", "sequence_classification"):
        return labels
    from experiments.models.build import pretrained_labels, reconcile_labels

    name = cfg.model.name_or_path
    own = pretrained_labels(name, trust_remote_code=cfg.model.trust_remote_code, revision=cfg.model.revision)
    ordered = reconcile_labels(own, labels, new_head=bool(cfg.model.get("new_head")), model=str(name))
    if ordered != labels:
        log.info("labels reordered to the id2label of %s", name)
        datamodule.use_labels(ordered)
    return ordered


def run(cfg: DictConfig, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train/test/predict as ``cfg.mode`` says; returns the metrics written to ``metrics.json``.

    ``history``: a list that receives the validation rows of the run's ``Tracking`` callback as they are
    logged (for the sweep objective, without reading ``val_history.json`` back).
    """
    import lightning as L
    from hydra.utils import instantiate

    from experiments import tracking
    from experiments.models.build import load_tokenizer

    single_log_stream()
    cfg = prepare(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") == "last":
        cfg.ckpt_path = _last_checkpoint(out)
    if is_rank_zero(os.environ):  # every DDP process runs this; the trainer does not exist yet
        from experiments import reporting

        reporting.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    L.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(
        cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code, revision=cfg.model.revision
    )
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, labels=_stored_labels(cfg))
    labels = _train_labels(cfg, datamodule)
    adapter = instantiate(cfg.finetune.adapter) if cfg.finetune.get("adapter") else None
    if (getattr(adapter, "is_prompt_learning", False) or cfg.finetune.get("name") in ("pet", "setfit")) \
            and cfg.mode == "train" and cfg.export.onnx:
        raise ConfigError(f"export.onnx=true exports a sequence-classification model; finetune={cfg.finetune.name} "
                          "exports a peft adapter, a masked-LM model with pet.json or an encoder with "
                          "setfit_head.json")
    model = instantiate(cfg.model)(labels=labels, adapter=adapter)
    adversary = instantiate(cfg.finetune.adversary) if cfg.finetune.get("adversary") else None
    module = instantiate(cfg.module)(
        model=model,
        labels=labels,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        adversary=adversary,
        finetune_name=str(cfg.finetune.get("name")),
    )
    trainable, total = module.trainable_parameters()
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    for callback in callbacks:  # the config W&B logs, as written to config.yaml (not read back from it)
        if isinstance(callback, tracking.Tracking):
            callback.config = OmegaConf.to_container(cfg, resolve=False)
            if history is not None:
                callback.history = history
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    metrics: dict[str, Any] = {}
    failed = True
    try:
        metrics = _fit_test_write(cfg, trainer, module, datamodule, tokenizer, out, (trainable, total))
        failed = False
    finally:
        # W&B: the exported model as an artifact (if asked); the run is closed even when this one failed.
        tracking.finish(trainer, cfg, metrics, failed=failed)
    return metrics


def _fit_test_write(cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, tokenizer: Any,
                    out: Path, params: tuple[int, int]) -> dict[str, Any]:
    """Run ``cfg.mode`` on an assembled trainer, module and datamodule (:func:`_fit_and_test`), then write
    the run's files (:func:`_write_run`). ``params``: the (trainable, total) parameter counts."""
    from experiments import reporting

    if cfg.mode == "predict":
        rows = _gather_ranks(trainer, trainer.predict(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path))
        if not trainer.is_global_zero:
            return {}
        written = reporting.write_evaluation(module.predict_result(datamodule, rows), out)
        log.info("written: %s", ", ".join(map(str, written)))
        print(f"predictions written to {out / 'predictions.jsonl'}")
        return {}
    metrics, best, tested = _fit_and_test(cfg, trainer, module, datamodule, params)
    if trainer.is_global_zero:
        _write_run(cfg, trainer, module, tokenizer, out, metrics, best, tested)
    return metrics


def _fit_and_test(cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, params: tuple[int, int]
                  ) -> tuple[dict[str, Any], str, bool]:
    """Fit (``mode=train``) and test the best checkpoint (or ``ckpt_path`` in ``mode=test``); writes nothing.
    Returns (metrics, the best checkpoint or "", whether a test split was evaluated)."""
    from experiments import reporting

    metrics: dict[str, Any] = {"train/trainable_params": params[0], "train/total_params": params[1]}
    best = ""
    if cfg.mode == "train":
        start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        except SystemExit:
            # Lightning ends a SIGTERM'd fit with SystemExit(None), i.e. exit code 0, as if it had finished.
            if not getattr(trainer, "received_sigterm", False):
                raise
            from experiments.errors import Interrupted

            raise Interrupted(f"stopped by SIGTERM at step {trainer.global_step}; the resume state is in "
                              f"checkpoints/last.ckpt: ckpt_path=last hydra.run.dir={cfg.paths.output_dir}") from None
        metrics["train/fit_time_s"] = round(time.perf_counter() - start, 2)
        metrics["train/epochs"] = int(trainer.current_epoch)
        callback = trainer.checkpoint_callback
        best = callback.best_model_path if callback else ""
        if best:
            metrics["train/best_checkpoint"] = best
            if callback.monitor is not None:  # none without validation: the last epoch's weights
                metrics["train/best_score"] = float(callback.best_model_score)
                metrics["train/monitor"] = str(callback.monitor)
        test_ckpt = best or None
    elif cfg.mode == "test":
        test_ckpt = cfg.ckpt_path
    else:
        raise ExperimentsError(f"mode={cfg.mode!r}: expected one of train, test, predict")
    tested = bool(datamodule.files.get("test"))
    if tested:
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt)
        if trainer.is_global_zero:
            metrics.update(reporting.flat_metrics(trainer.callback_metrics))
            metrics["test/checkpoint"] = test_ckpt or "last weights"
    return metrics, best, tested


def _write_run(cfg: DictConfig, trainer: Any, module: Any, tokenizer: Any, out: Path, metrics: dict[str, Any],
               best: str, tested: bool) -> None:
    """Rank 0: the test evaluation's files, ``metrics.json`` and the exported model (the best weights)."""
    from experiments import reporting
    from experiments.throughput import peak_rss_mib

    if tested:
        reporting.write_evaluation(module.results["test"], out, trainer.loggers, step=trainer.global_step)
    metrics["peak_rss_mib"] = round(peak_rss_mib(), 1)  # this process, so far (rank 0 under DDP)
    reporting.write_json(out / "metrics.json", metrics)
    if cfg.mode == "train" and (cfg.export.model or cfg.export.onnx):
        if best and not tested:
            # No test run loaded the best checkpoint: load it here, so the export is the best weights.
            module.load_weights(best)
        written = reporting.export_model(module.model, tokenizer, out / "model")
        log.info("model exported to %s (weights of %s)", written, best or "the last step")
        if cfg.export.onnx:
            from experiments.onnx_export import export_onnx

            onnx_path = export_onnx(out / "model", out / "model.onnx", head=str(cfg.model.head))
            log.info("ONNX model written to %s", onnx_path)
    if key := next((k for k in ("test/f1", "test/accuracy", "test/auc", "test/mrr") if k in metrics), None):
        print(f"{key} = {metrics[key]:.4f}   (outputs in {out})")


# Set when Hydra hands over to the task function: an error before that is Hydra's own composition or
# command-line error (a user error, exit code 2); after it, a bug in a run keeps Hydra's report (exit 1).
_TASK_STARTED = False


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; user errors become one line on stderr and exit code 2 (3: training diverged,
    ``experiments.callbacks.NonFiniteLossError``). Returns the value of ``optimized_metric`` when set
    (Hydra's Optuna sweeper, ``hparams_search=...``).

    Under multirun (``-m``) a failing job does not end the sweep: its error is logged and written to
    ``job_status.json`` in its run dir, it returns NaN (Optuna records a FAIL trial), and the sweep goes
    on; ``experiments.multirun.SweepSummary`` lists the failures at the end.
    """
    global _TASK_STARTED
    _TASK_STARTED = True
    from experiments.multirun import in_multirun, record_job

    out = Path(cfg.paths.output_dir)
    made_before, config_before = _run_files(out), _read_text(out / "config.yaml")
    try:
        from experiments.tracking import objective

        history: list[dict[str, Any]] = []
        value = objective(cfg, run(cfg, history), history)
    except Exception as err:
        user_error = _user_error(err)
        if in_multirun():
            record_job(cfg, err, user_error)
            return float("nan")
        if user_error is None:
            raise
        if user_error.exit_code == EXIT_USER_ERROR and is_rank_zero(os.environ) and _run_files(out) == made_before:
            _undo_start(out, new_dir=not made_before and config_before is None, config_before=config_before)
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(user_error.exit_code)
    if in_multirun():
        record_job(cfg, None, None, value)
    return value


def _run_files(out: Path) -> dict[str, tuple[int, int]]:
    """What the run dir ``out`` holds besides the files every start rewrites (Hydra's ``.hydra/`` and
    ``*.log``, our ``config.yaml``): each file's (size, mtime in ns), each folder as ``name/``."""
    found: dict[str, tuple[int, int]] = {}
    if not out.is_dir():
        return found
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if rel.parts[0] == ".hydra" or (len(rel.parts) == 1 and (rel.name == "config.yaml" or rel.suffix == ".log")):
            continue
        if path.is_dir():
            found[f"{rel}/"] = (0, 0)
        else:
            stat = path.stat()
            found[str(rel)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _undo_start(out: Path, new_dir: bool, config_before: str | None) -> None:
    """A run stopped by a user error before it made anything: a run dir that held nothing before it (Hydra
    makes it just before the run; an empty folder named by ``hydra.run.dir`` counts too) goes, since it would
    read as a run; in a reused one, ``config.yaml`` is put back as it was (Hydra has already rewritten
    ``.hydra/``)."""
    from experiments import reporting

    if new_dir:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    elif config_before is None:
        (out / "config.yaml").unlink(missing_ok=True)
    else:
        reporting.write_text(out / "config.yaml", config_before)


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
    _report_hydra_errors_as_user_errors()
    hydra_main()


def _report_hydra_errors_as_user_errors() -> None:
    """Make Hydra's own errors (unknown key, bad override, missing config option) one line and exit 2,
    like every other user error; errors raised inside a run keep Hydra's report.

    Hydra reports every exception through ``hydra._internal.utils.run_and_report`` (exit 1); this wraps it.
    ``HYDRA_FULL_ERROR=1`` keeps Hydra's full traceback.
    """
    try:
        from hydra._internal import utils as hydra_utils
    except ImportError:  # pragma: no cover - a Hydra without this module keeps its own behaviour
        return
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None or getattr(original, "_experiments", False):
        return

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except Exception as err:
            if _TASK_STARTED or os.environ.get("HYDRA_FULL_ERROR") == "1":
                def again(error: Exception = err) -> Any:
                    raise error

                return original(again)
            print(f"error: {_one_line(err)}", file=sys.stderr)
            sys.exit(2)

    run_and_report._experiments = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def _one_line(err: BaseException) -> str:
    """An exception and its cause as one line (Hydra's messages span several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # Hydra lists a group's options one per line after "Available options in '<group>':".
    head = next((i for i, line in enumerate(lines) if line.startswith("Available options in")), None)
    if head is not None:
        end = next((i for i in range(head + 1, len(lines)) if lines[i].endswith(":")), len(lines))
        lines = [*lines[:head], lines[head] + " " + ", ".join(lines[head + 1:end])]
    parts = [" ".join(lines)]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0].strip()
        if first not in parts[0]:
            parts.append(f"({first})")
    return " ".join(p for p in parts if p) or type(err).__name__


if __name__ == "__main__":
    main()
