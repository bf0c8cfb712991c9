"""Run the Hydra entry point in-process, as ``python -m experiments ...`` would (lightning-hydra-template
style): the one CLI harness of the tests (``conftest.run_cli`` is this with the tiny BERT).

``compose`` builds the same config the command line builds (with the ``hydra`` node, so
``${hydra:runtime.output_dir}`` and ``get_original_cwd`` work), the output folder is pointed at a test
folder, and ``experiments.__main__.run`` is called. The global ``HydraConfig`` is cleared afterwards so
later tests see no Hydra state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

# Overrides that keep a CLI test small and quiet on CPU.
QUICK = ("trainer.precision=32", "trainer.accelerator=cpu", "logger=csv", "~callbacks.progress_bar")


def compose_config(overrides: Sequence[str], output_dir: str | Path | None = None) -> DictConfig:
    """The task config for ``overrides`` (without the ``hydra`` node, as ``@hydra.main`` passes it); the full
    config, ``hydra`` node included, becomes the global HydraConfig. ``output_dir``: the run dir
    (``hydra.runtime.output_dir`` and ``paths.output_dir``); ``None`` leaves Hydra's default."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from experiments.config import config_dir, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = os.getcwd()
        if output_dir is not None:
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    # @hydra.main hands the task function the config without its `hydra` node; so do we.
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def run_cli(overrides: Sequence[str], output_dir: str | Path, quick: bool = True) -> dict[str, Any]:
    """``experiments.__main__.run`` on the composed config; returns the metrics it wrote."""
    from hydra.core.hydra_config import HydraConfig

    from experiments.__main__ import run

    cfg = compose_config([*(QUICK if quick else ()), *overrides], output_dir)
    try:
        return run(cfg)
    finally:
        HydraConfig.instance().cfg = None
