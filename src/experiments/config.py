"""Config helpers used by the entry point: resolvers, path resolution, automatic choices.

Why: configs must work the same from a checkout and from an installed wheel, and relative paths
must mean "relative to where the user launched", whatever Hydra does with the working directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

PACKAGE_DIR = Path(__file__).resolve().parent
PATH_KEYS = ("_file", "_dir", "_path")


def config_dir() -> str:
    """Folder of the Hydra configs: package data in a wheel, ``conf/`` at the top of a checkout."""
    packaged = PACKAGE_DIR / "conf"
    return str(packaged if packaged.is_dir() else PACKAGE_DIR.parents[1] / "conf")


def resource_path(name: str) -> str:
    """Absolute path of a data file shipped inside the package (``experiments/resources/<name>``)."""
    return str(PACKAGE_DIR / "resources" / name)


def _embedded_model(distribution: str) -> str:
    from experiments.models.build import embedded_model_dir

    return embedded_model_dir(distribution)


def register_resolvers() -> None:
    """Register ``${resource:...}`` and ``${embedded_model:...}`` (idempotent)."""
    for name, fn in (("resource", resource_path), ("embedded_model", _embedded_model)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


def launch_dir() -> Path:
    """The directory the user launched from (Hydra's original cwd when Hydra runs)."""
    try:
        from hydra.utils import get_original_cwd

        return Path(get_original_cwd())
    except ValueError:  # Hydra not initialised (library use, tests)
        return Path.cwd()


def absolutize_paths(node: DictConfig, base: Path) -> None:
    """Make every ``*_file``/``*_dir``/``*_path`` string under ``node`` absolute, relative to ``base``."""
    with open_dict(node):
        for key in list(node.keys()):
            value = node[key]
            if isinstance(value, DictConfig):
                absolutize_paths(value, base)
            elif isinstance(value, str) and str(key).endswith(PATH_KEYS) and "://" not in value:
                p = Path(value).expanduser()
                node[key] = str(p if p.is_absolute() else (base / p).resolve())


def cpu_bf16_units() -> str | None:
    """The bf16 units this CPU has, by torch's own capability checks (``torch.cpu``): ``"AMX"``,
    ``"AVX512-BF16"``, or None (e.g. an AVX2-only CPU, where bf16 runs emulated and far slower)."""
    import torch

    checks = (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16"))
    for name, unit in checks:
        check = getattr(torch.cpu, name, None)
        if callable(check) and check():
            return unit
    return None


def auto_precision(accelerator: str) -> tuple[str, str]:
    """``trainer.precision=auto``: the precision to train with and why.

    GPUs: ``bf16-mixed`` where ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else ``16-mixed``.
    CPUs: ``bf16-mixed`` where the CPU has AMX or AVX512-BF16 (measured with ``benchmarks/precision.py``:
    1.54x the fp32 samples/s on a 2-core AVX512-BF16 AMD EPYC), else ``32`` (on an AVX2-only EPYC bf16
    ran at 0.05x fp32).

    Returns:
        ``(precision, reason)``.
    """
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"GPU {torch.cuda.get_device_name()} supports bf16"
        return "16-mixed", f"GPU {torch.cuda.get_device_name()} has no bf16"
    unit = cpu_bf16_units()
    if unit:
        return "bf16-mixed", f"CPU has {unit} (torch.cpu capability check)"
    return "32", "CPU has neither AMX nor AVX512-BF16 (bf16 would run emulated, slower than fp32)"


def wandb_has_key() -> bool:
    """True when a W&B API key is configured (env var or netrc); never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def prepare(cfg: DictConfig) -> DictConfig:
    """Resolve what must be decided before instantiation: paths, precision, W&B mode.

    Returns a resolved copy; the input is left untouched.
    """
    cfg = cfg.copy()
    OmegaConf.resolve(cfg)
    base = launch_dir()
    with open_dict(cfg):
        absolutize_paths(cfg.data, base)
        if cfg.get("ckpt_path") and cfg.ckpt_path not in ("last", "best"):
            cfg.ckpt_path = str((base / Path(cfg.ckpt_path).expanduser()).resolve())
        if str(cfg.trainer.get("precision")) == "auto":
            cfg.trainer.precision, why = auto_precision(str(cfg.trainer.get("accelerator", "auto")))
            logging.getLogger("experiments").info("trainer.precision=auto: %s (%s)", cfg.trainer.precision, why)
        wandb = (cfg.get("logger") or {}).get("wandb")
        if wandb is not None and wandb.get("mode", "online") == "online" and not wandb_has_key():
            wandb.mode = "offline"
        model_path = Path(str(cfg.model.name_or_path)).expanduser()
        if not model_path.is_absolute() and (base / model_path).is_dir():
            cfg.model.name_or_path = str((base / model_path).resolve())
    return cfg


def single_log_stream() -> None:
    """Drop Lightning's own console handler when Hydra has configured the root logger.

    Lightning adds a stderr handler to the ``lightning`` logger that also propagates to the root, so
    under Hydra every Lightning message was printed twice; Hydra's handlers (console + run-dir log
    file) keep receiving them.
    """
    import logging

    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
