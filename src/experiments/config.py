"""Config helpers used by the entry point: resolvers, path resolution, automatic choices.

Why: configs must work the same from a checkout and from an installed wheel, and relative paths
must mean "relative to where the user launched", whatever Hydra does with the working directory.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _help_text() -> str:
    from experiments.help import help_text

    return help_text()


def run_dir(task_name: str, mode: str, ckpt_path: str | None, model_path: str | None, stamp: str) -> str:
    """The default run dir (``hydra.run.dir``): ``outputs/<task>/<stamp>``, except that test and predict
    runs of a trained model write next to that model's run: ``<run>/<mode>_<stamp>`` when ``ckpt_path`` is
    ``<run>/checkpoints/<file>.ckpt`` or ``model.name_or_path`` is an exported ``<run>/model`` folder."""
    if mode in ("test", "predict"):
        for path, depth in ((ckpt_path, 2), (model_path, 1)):
            if not path or path in ("last", "best"):
                continue
            p = Path(str(path)).expanduser()
            owner = p.parents[depth - 1] if len(p.parents) >= depth else None
            marker = p.parent.name == "checkpoints" if depth == 2 else p.name == "model" and p.is_dir()
            if owner is not None and marker and (owner / "config.yaml").exists():
                return str(owner / f"{mode}_{stamp}")
    return f"outputs/{task_name}/{stamp}"


def register_resolvers() -> None:
    """Register ``${resource:...}``, ``${embedded_model:...}``, ``${help_text:}`` and ``${run_dir:...}``
    (idempotent)."""
    for name, fn in (("resource", resource_path), ("embedded_model", _embedded_model), ("help_text", _help_text),
                     ("run_dir", run_dir)):
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


@functools.cache
def bf16_speedup(seconds: float = 0.2) -> float:
    """How much faster a bf16-autocast linear layer runs than fp32 on this CPU (fp32 time / bf16 time),
    timed on a BERT-sized layer (896 x 384 @ 384 x 1536) for about ``seconds`` each, once per process.

    Why measured: the capability flags do not tell the speed. AVX512-BF16 measured 1.54x fp32 training
    throughput on a 2-core AMD EPYC, but 0.44x on a 2-core Intel Xeon that also reports AVX512-BF16
    (docs/results.md). Why interleaved rounds and the fastest of each: another job on the cores only
    adds time, so one block of fp32 calls followed by one of bf16 calls read 1.00x on a machine where
    it is 2.2-2.9x whenever the other job hit one block; the minimum over alternating short rounds
    is what the CPU does when it is free.
    """
    import time

    import torch

    layer, x = torch.nn.Linear(384, 1536), torch.randn(896, 384)

    def per_call(bf16: bool, calls: int) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            for _ in range(calls):
                layer(x)
        return (time.perf_counter() - start) / calls

    per_call(False, 3), per_call(True, 3)  # warm-up (oneDNN primitives)
    best = {False: float("inf"), True: float("inf")}
    rounds, deadline = 0, time.perf_counter() + 2 * seconds
    while rounds < 5 or time.perf_counter() < deadline:
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], per_call(bf16, 4))
        rounds += 1
    return best[False] / best[True]


def auto_precision(accelerator: str) -> tuple[str, str]:
    """``trainer.precision=auto``: the precision to train with and why.

    GPUs: ``bf16-mixed`` where ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else ``16-mixed``.
    CPUs: ``32`` unless the CPU has bf16 units by torch's capability checks (AMX or AVX512-BF16) *and*
    bf16 is measured faster here (:func:`bf16_speedup` >= 1.1); then ``bf16-mixed``. Without bf16 units,
    bf16 runs emulated (0.05x fp32 on an AVX2-only AMD EPYC).

    Returns:
        ``(precision, reason)``.
    """
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"GPU {torch.cuda.get_device_name()} supports bf16"
        return "16-mixed", f"GPU {torch.cuda.get_device_name()} has no bf16"
    unit = cpu_bf16_units()
    if not unit:
        return "32", "CPU has neither AMX nor AVX512-BF16 (bf16 would run emulated, slower than fp32)"
    speedup = bf16_speedup()
    if speedup >= 1.1:
        return "bf16-mixed", f"CPU has {unit} and a bf16 linear layer ran {speedup:.2f}x fp32 here"
    return "32", f"CPU has {unit}, but a bf16 linear layer ran only {speedup:.2f}x fp32 here"


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
        limit_val = cfg.trainer.get("limit_val_batches")
        if limit_val is not None and float(limit_val) == 0.0:
            _without_validation(cfg)
        model_path = Path(str(cfg.model.name_or_path)).expanduser()
        if not model_path.is_absolute() and (base / model_path).is_dir():
            cfg.model.name_or_path = str((base / model_path).resolve())
    return cfg


def _without_validation(cfg: DictConfig) -> None:
    """``trainer.limit_val_batches=0`` (no dev set, fixed hyper-parameters: the SetFit few-shot protocol):
    nothing to monitor, so early stopping is dropped and the checkpoint keeps the last epoch's weights,
    which test and export then use. Without this, Lightning stops the run at the first epoch end."""
    callbacks = cfg.get("callbacks") or {}
    stopping = bool(callbacks.get("early_stopping"))
    if stopping:
        callbacks.early_stopping = None
    if callbacks.get("model_checkpoint"):
        callbacks.model_checkpoint.monitor = None
    logging.getLogger("experiments").info(
        "trainer.limit_val_batches=0: no validation; %sthe last epoch's weights are tested and exported",
        "early_stopping off, " if stopping else "")


def single_log_stream() -> None:
    """Drop Lightning's own console handler when Hydra has configured the root logger.

    Lightning adds a stderr handler to the ``lightning`` logger that also propagates to the root, so
    under Hydra every Lightning message was printed twice; Hydra's handlers (console + run-dir log
    file) keep receiving them.
    """
    import logging
    import warnings

    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    # Noise that says nothing about the run: Lightning's advertisement and a deprecation inside Lightning.
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _DropAdverts:
    """Logging filter: drops Lightning's "Tip: ... litlogger" line."""

    def filter(self, record) -> bool:
        return "litlogger" not in record.getMessage()


def parse_with_passthrough(parser: Any, argv: Sequence[str] | None = None) -> tuple[Any, list[str]]:
    """``(parsed own arguments, overrides)`` of a runner's command line (``sys.argv[1:]`` when ``argv`` is
    None): ``parser`` reads what comes before ``--``; what follows goes to every run."""
    import sys

    own, extra = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    return parser.parse_args(own), extra


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(own arguments, overrides)``: ``argv`` split at the first ``--``; what follows goes to every run."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
