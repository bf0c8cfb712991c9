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
