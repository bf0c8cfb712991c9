"""Multi-process launches (Lightning's DDP launcher, torchrun, SLURM's srun) under Hydra.

Why: every process of a DDP run executes ``python -m experiments ...`` and so runs Hydra, which would
make a run dir (timestamped: one per process if their clocks tick apart), write ``.hydra/`` and a log
file in it. One run dir per run and outputs from rank 0 only need two things decided before Hydra
parses the command line:

* Processes started by Lightning for ranks > 0 get ``hydra.run.dir=<rank 0's run dir>`` and
  ``hydra.output_subdir=null`` from Lightning itself (``_hydra_subprocess_cmd``); those started by
  torchrun or srun get the same run dir from the job id (``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID``)
  unless ``hydra.run.dir`` is given.
* Every rank > 0 gets ``hydra.output_subdir=null`` and ``hydra/job_logging=stdout``: it writes nothing
  into the run dir; Lightning's loggers, checkpoints and our reports are written by rank 0 only.

The rank is read from the environment variables the launchers set, because Hydra runs before Lightning
knows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Set by Lightning's launcher (LOCAL_RANK, NODE_RANK), torchrun (RANK, LOCAL_RANK, GROUP_RANK) and srun.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def is_rank_zero(env: Mapping[str, str]) -> bool:
    """True unless a launcher's variables say this process is not global rank 0."""
    return all(_int(env.get(k)) == 0 for k in RANK_VARIABLES)


def external_world_size(env: Mapping[str, str]) -> int:
    """Processes started by torchrun or srun for this run (1 when Lightning starts them itself)."""
    if "TORCHELASTIC_RUN_ID" in env:
        return _int(env.get("WORLD_SIZE")) or 1
    if "SLURM_PROCID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return _int(env.get("SLURM_NTASKS")) or 1
    return 1


def _given(argv: Sequence[str], key: str) -> bool:
    return any(a.lstrip("+").startswith(f"{key}=") for a in argv)


def launch_overrides(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Hydra overrides to append to ``argv`` (the command-line overrides) for this process.

    Raises:
        ValueError: torchrun without a run id (``--rdzv-id`` or ``--standalone``) and no ``hydra.run.dir``.
    """
    extra: list[str] = []
    if external_world_size(env) > 1 and not _given(argv, "hydra.run.dir"):
        job = env.get("SLURM_JOB_ID") if "SLURM_PROCID" in env else env.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            raise ValueError(
                "several processes were launched without a shared run dir: pass hydra.run.dir=<folder> "
                "(the same for every process), or a torchrun --rdzv-id"
            )
        prefix = "slurm" if "SLURM_PROCID" in env else "torchrun"
        extra.append(f"hydra.run.dir=outputs/${{task_name}}/{prefix}-{job}")
    if not is_rank_zero(env):
        extra.append("hydra.output_subdir=null")
        if not _given(argv, "hydra/job_logging"):
            extra.append("hydra/job_logging=stdout")
    return extra


def gather_objects(obj, world_size: int) -> list:
    """``obj`` of every DDP rank, index = global rank (``torch.distributed.all_gather_object``); ``[obj]``
    in a single process. Every rank must call it at the same point."""
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_rows(rows: list[dict], world_size: int) -> list[dict]:
    """Every rank's evaluation rows (dicts of tensors with the same keys): this rank's, concatenated per key,
    gathered with :func:`gather_objects`; ranks without rows are left out. ``rows`` itself in one process."""
    if world_size == 1:
        return rows
    import torch

    mine = {k: torch.cat([r[k] for r in rows]) for k in rows[0]} if rows else None
    return [g for g in gather_objects(mine, world_size) if g is not None]
