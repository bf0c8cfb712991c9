"""Every ``_target_`` node of every composed config binds to its target's signature: a misspelt key in a
YAML file fails here, not at run time. Composed over task x model x finetune (x recommender for
recommendation), and over every trainer and logger option."""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from conftest import compose_config
from experiments.config import config_dir

CONF = Path(config_dir())
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def accepted(target) -> tuple[set[str], bool]:
    """Keyword names ``target`` accepts, following ``**kwargs`` up the MRO of a class; and whether it
    accepts any keyword at all (a ``**kwargs`` that goes nowhere we can see)."""
    names: set[str] = set()
    callables = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] if inspect.isclass(target) \
        else [target]
    for fn in callables:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names, False
        if not inspect.isclass(target):
            return names, True
    return names, True


def target_nodes(node, path=""):
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            yield from target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from target_nodes(item, f"{path}[{i}]")


def check(cfg) -> list[str]:
    problems = []
    for path, node in target_nodes(cfg):
        target = get_object(node._target_)
        names, open_kwargs = accepted(target)
        keys = {str(k) for k in node} - HYDRA_KEYS
        unknown = sorted(keys - names) if not open_kwargs else []
        if unknown:
            problems.append(f"{path} ({node._target_}): {unknown} not among its arguments")
    return problems


FAMILY_GROUP = {"recommendation": "recommender", "support_response": "answer_model"}
COMBOS = [(t, m, f, r) for t, m, f in itertools.product(options("task"), options("model"), options("finetune"))
          for r in ([f"{FAMILY_GROUP[t]}={o}" for o in options(FAMILY_GROUP[t])] if t in FAMILY_GROUP else [None])]


@pytest.mark.parametrize("task,model,finetune,family", COMBOS)
def test_every_target_node_binds(task, model, finetune, family, tmp_path):
    overrides = [f"task={task}", f"model={model}", f"finetune={finetune}"]
    if family:
        overrides.append(family)
    cfg = compose_config(overrides, output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert check(cfg) == []


@pytest.mark.parametrize("group,option", [(g, o) for g in ("trainer", "logger", "callbacks", "experiment")
                                          for o in options(g)])
def test_every_target_node_of_each_option_binds(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert check(cfg) == []


def test_the_check_catches_a_misspelt_key(tmp_path):
    cfg = compose_config(["+data.batchsize=3"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert any("batchsize" in p for p in check(cfg))
