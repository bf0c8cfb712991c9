"""The import rules of docs/architecture.md, checked on the source (every import, top-level or inside a
function): data and metrics never import the training modules, metrics never import Lightning, and only
the entry-point layer imports Hydra."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "experiments"
# The entry-point layer: the CLI, its config helpers, the sweep/baseline runners, Hydra's multirun callback.
HYDRA_ALLOWED = {"__main__.py", "config.py", "baselines.py", "sweep.py", "multirun.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def sources(folder: Path = SRC):
    return sorted(p for p in folder.rglob("*.py"))


def test_data_and_metrics_never_import_the_training_modules():
    offenders = {str(p.relative_to(SRC)): sorted(m for m in imports(p) if m.startswith("experiments.modules"))
                 for p in sources(SRC / "tasks")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_metrics_never_import_lightning():
    for path in (SRC / "tasks").glob("*/metrics.py"):
        assert not [m for m in imports(path) if m.split(".")[0] in ("lightning", "pytorch_lightning")], path


def test_only_the_entry_point_layer_imports_hydra():
    offenders = [str(p.relative_to(SRC)) for p in sources()
                 if any(m.split(".")[0] == "hydra" for m in imports(p)) and p.name not in HYDRA_ALLOWED]
    assert offenders == []


def test_the_rules_see_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from hydra.utils import instantiate\n    import lightning as L\n")
    assert {"hydra.utils", "lightning"} <= imports(probe)


def test_strategies_and_models_never_import_the_training_modules():
    offenders = {str(p.relative_to(SRC)): sorted(m for m in imports(p) if m.startswith("experiments.modules"))
                 for folder in ("finetune", "models") for p in sources(SRC / folder)}
    assert {k: v for k, v in offenders.items() if v} == {}


FAMILIES = {  # module -> the datamodule of the task that uses it
    "experiments.modules.token_classification.TokenClassificationModule": "experiments.tasks.ner.datamodule.NERDataModule",
    "experiments.modules.sequence_classification.SequenceClassificationModule":
        "experiments.tasks.classification.datamodule.TextClassificationDataModule",
    "experiments.modules.ranking.RankingModule": "experiments.tasks.recommendation.datamodule.RecommendationDataModule",
    "experiments.modules.answer_selection.AnswerSelectionModule":
        "experiments.tasks.recommendation.answer_datamodule.AnswerSelectionDataModule",
}


def _class(path: str):
    import importlib

    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_each_family_datamodule_provides_what_its_module_reads():
    import inspect
    import re

    from experiments.evaluation import protocol_members

    for module_path, dm_path in FAMILIES.items():
        module, dm = _class(module_path), _class(dm_path)
        assert module.data_protocol is not None, module_path
        # Members are class attributes (methods, properties) or set in an __init__ of the class hierarchy.
        assigned = {m for c in dm.__mro__ if "__init__" in vars(c) and c.__module__.startswith("experiments")
                    for m in re.findall(r"self\.(\w+)\s*[:=]", inspect.getsource(c.__init__))}
        missing = [n for n in protocol_members(module.data_protocol) if not hasattr(dm, n) and n not in assigned]
        assert missing == [], f"{dm_path} lacks {missing} of {module.data_protocol.__name__}"


def test_a_module_paired_with_another_familys_data_is_one_clear_error(tiny_encoder_dir, tiny_tokenizer, tmp_path):
    from types import SimpleNamespace

    import pytest

    from experiments.errors import ConfigError
    from experiments.models.build import build_model
    from experiments.modules.sequence_classification import SequenceClassificationModule
    from experiments.tasks.ner.datamodule import NERDataModule

    conll = tmp_path / "t.conll"
    conll.write_text("john B-PER\nlives O\n\nparis B-LOC\n")
    ner = NERDataModule(tiny_tokenizer, train_file=str(conll))
    model = build_model(str(tiny_encoder_dir), head="sequence_classification", labels=["a", "b"])
    module = SequenceClassificationModule(model=model, labels=["a", "b"])
    module._trainer = SimpleNamespace(datamodule=ner)
    with pytest.raises(ConfigError, match="SequenceClassificationData datamodule; NERDataModule lacks "
                                          "class_counts, embedding_loader, examples, num_examples"):
        module.data()
