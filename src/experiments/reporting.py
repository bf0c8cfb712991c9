"""Run outputs written so that a crash never leaves a partial file looking finished.

Every file is written to a temporary name in the same folder and renamed into place (``os.replace``
is atomic on POSIX); folders (the exported model) are written to ``<name>.tmp`` and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Write a file atomically: ``write(fh)`` fills a temporary file in the same folder, which is
    fsync'ed, given the usual permissions and renamed over ``path`` (``os.replace``), then the folder is
    fsync'ed. A crash at any point leaves either the old file or the new one, never a partial one.
    Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (POSIX); silently skipped where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``; parent folders are created."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def flat_metrics(metrics: dict[str, Any], prefixes: tuple[str, ...] = ("test/",)) -> dict[str, float]:
    """``{key: float}`` for logged metrics whose key starts with one of ``prefixes``."""
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefixes):
            out[key] = float(value.item() if hasattr(value, "item") else value)
    return out


def export_model(model: Any, tokenizer: Any, out_dir: str | Path) -> dict[str, str]:
    """Write the fine-tuned model as Hugging Face folders (safetensors), atomically.

    A plain model goes to ``out_dir`` (``save_pretrained`` + tokenizer). A peft model writes its
    adapter to ``<out_dir>_adapter`` and a merged full model (``merge_and_unload`` on a copy, so the
    in-memory model keeps its adapter) to ``out_dir``; plain ``transformers`` loads the latter.

    Prompt learning (virtual tokens, which no merge can fold into the weights) writes only the adapter
    folder, loaded with ``peft.AutoPeftModelForSequenceClassification.from_pretrained``.

    Returns:
        ``{"model": path}`` plus ``{"adapter": path}`` for peft models; only ``{"adapter": path}`` for prompt
        learning.
    """
    import copy

    out_dir = Path(out_dir)
    written = {}
    config = next(iter(getattr(model, "peft_config", {}).values()), None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        # Virtual tokens cannot be merged into the weights: the adapter folder is the export (loaded with
        # peft's AutoPeftModelForSequenceClassification, which fetches the base model it names).
        adapter_dir = out_dir.with_name(out_dir.name + "_adapter")
        _save_folder(adapter_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
        return {"adapter": str(adapter_dir)}
    if hasattr(model, "merge_and_unload"):
        adapter_dir = out_dir.with_name(out_dir.name + "_adapter")
        _save_folder(adapter_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
        written["adapter"] = str(adapter_dir)
        model = copy.deepcopy(model).merge_and_unload()
    _save_folder(out_dir, lambda d: (model.save_pretrained(d, safe_serialization=True), tokenizer.save_pretrained(d)))
    written["model"] = str(out_dir)
    return written


def _save_folder(final: Path, save) -> None:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


REPORT_KEY = "classification_report"


def write_evaluation(result: Any, out_dir: str | Path, loggers: Iterable[Any] = (), step: int = 0) -> list[Path]:
    """Write an :class:`~experiments.evaluation.EvaluationResult` into ``out_dir`` and hand it to the loggers.

    Files (each atomic): ``classification_report.txt`` (when ``report``), ``predictions.jsonl`` (test and
    predict), every ``files`` entry, every ``figures`` entry as PNG. Loggers: a ``WandbLogger`` gets
    ``<stage>/classification_report`` as a table and each figure as an image; a ``TensorBoardLogger`` gets
    the figures (``add_figure``). Figures are closed afterwards.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    written: list[Path] = []
    if result.report:
        written.append(write_text(out / "classification_report.txt", result.report))
    if result.stage in ("test", "predict"):
        written.append(write_jsonl(out / "predictions.jsonl", result.records))
    for name, text in result.files.items():
        written.append(write_text(out / name, text))
    for name, figure in result.figures.items():
        path = atomic_write(out / name, lambda fh, figure=figure: figure.savefig(fh, format="png", dpi=120))
        written.append(path)
    _log_evaluation(result, list(loggers), step)
    for figure in result.figures.values():
        import matplotlib.pyplot as plt

        plt.close(figure)
    return written


def _log_evaluation(result: Any, loggers: list[Any], step: int) -> None:
    if not loggers:
        return
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        for name, figure in result.figures.items():
            key = f"{result.stage}/{Path(name).stem}"
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[figure])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(key, figure, global_step=step, close=False)
        if isinstance(logger, WandbLogger) and result.table is not None and result.table[1]:
            columns, rows = result.table
            logger.log_table(key=f"{result.stage}/{REPORT_KEY}", columns=list(columns), data=[list(r) for r in rows])
