"""Every config option composes, and every dataset preset fits the datamodule of some task."""

from __future__ import annotations

import functools
import inspect
import itertools
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import compose_config
from experiments.config import config_dir

CONF = Path(config_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in ("task", "dataset", "model", "finetune", "trainer", "callbacks", "logger", "experiment", "debug"):
        assert options(group), group


@pytest.mark.parametrize("task,finetune", list(itertools.product(options("task"), options("finetune"))))
def test_task_by_finetune_composes(task, finetune, tmp_path):
    cfg = compose_config([f"task={task}", f"finetune={finetune}"], output_dir=tmp_path)
    assert cfg.task_name
    assert cfg.module._target_ and cfg.data._target_ and cfg.model.head
    OmegaConf.resolve(cfg)


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in ("model", "trainer", "logger", "debug", "experiment") for o in options(g)],
)
def test_each_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)


@functools.cache
def task_datamodule(task: str) -> str:
    """The datamodule ``_target_`` of ``task=<task>`` as composed (a task may take its data node from a base)."""
    return compose_config([f"task={task}"]).data._target_


@pytest.mark.parametrize("dataset", options("dataset"))
def test_each_dataset_preset_fits_a_task(dataset, tmp_path):
    preset = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml")
    text = (CONF / "dataset" / f"{dataset}.yaml").read_text()
    keys = set(preset.data) if "@package _global_" in text else set(preset)
    fits = []
    for task in options("task"):
        target = task_datamodule(task)
        params = inspect.signature(get_class(target).__init__).parameters
        if keys <= set(params):
            fits.append(task)
    assert fits, f"dataset={dataset} sets {sorted(keys)}, which no task's datamodule accepts"
    cfg = compose_config([f"task={fits[0]}", f"dataset={dataset}"], output_dir=tmp_path)
    for key in keys:
        assert key in cfg.data
