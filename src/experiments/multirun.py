"""Hydra multirun (``-m``, the basic launcher or ``hparams_search=*_optuna``) that survives failing jobs.

Why: a sweep of tens of trials must not end because one trial diverged or drew a configuration that is
refused. Each job records how it ended in ``job_status.json`` in its own run dir (written by the entry
point); a failing job returns NaN, which Hydra's basic sweeper passes on and Optuna records as a FAIL
trial, so the sweep goes on. :class:`SweepSummary` (a Hydra callback, ``hydra.callbacks.summary``)
collects the records into ``<sweep dir>/summary.json`` after every job and logs the failures when the
sweep ends.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from experiments import reporting

log = logging.getLogger("experiments")

STATUS_FILE = "job_status.json"
SUMMARY_FILE = "summary.json"


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def record_job(cfg: Any, err: BaseException | None, user_error: BaseException | None, value: Any = None) -> None:
    """Write this job's ``job_status.json`` (``status``: ``completed`` or ``failed``, the error, the value)
    and log a failure: one line for a user error, the traceback for anything else."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    status: dict[str, Any] = {"job": hc.job.num, "overrides": list(hc.overrides.task),
                              "status": "completed" if err is None else "failed"}
    if err is not None:
        status["error"] = str(user_error or f"{type(err).__name__}: {err}")
        status["exit_code"] = getattr(user_error, "exit_code", 1)
        if user_error is not None:
            log.error("job %s failed: %s", hc.job.num, user_error)
        else:
            log.error("job %s failed:\n%s", hc.job.num, "".join(traceback.format_exception(err)))
    elif value is not None:
        status["value"] = float(value)
    reporting.write_json(Path(hc.runtime.output_dir) / STATUS_FILE, status)


class SweepSummary(Callback):
    """Hydra callback: ``<sweep dir>/summary.json`` lists every job of a multirun with its status; the
    failures are logged when the multirun ends."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(hc.runtime.output_dir)
        try:
            status = json.loads((job_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            failed = getattr(job_return, "status", None) is not None and job_return.status.name == "FAILED"
            status = {"job": hc.job.num, "overrides": list(hc.overrides.task),
                      "status": "failed" if failed else "completed"}
        status["run_dir"] = str(job_dir)
        path = Path(hc.sweep.dir) / SUMMARY_FILE
        jobs = _read_jobs(path)
        jobs = [j for j in jobs if j.get("job") != status["job"]] + [status]
        reporting.write_json(path, {"jobs": sorted(jobs, key=lambda j: j.get("job", 0))})

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / SUMMARY_FILE
        jobs = _read_jobs(path)
        failed = [j for j in jobs if j.get("status") == "failed"]
        if failed:
            log.warning("%d of %d jobs failed (%s):", len(failed), len(jobs), path)
            for j in failed:
                log.warning("  job %s %s: %s", j.get("job"), " ".join(j.get("overrides", [])), j.get("error"))
        else:
            log.info("all %d jobs completed (%s)", len(jobs), path)


def _read_jobs(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(path.read_text()).get("jobs", []))
    except (OSError, ValueError):
        return []
