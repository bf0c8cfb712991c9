"""Config errors: unknown choices list the available ones; impossible combinations fail before training.

What "before training" means here: the error comes out of ``run`` before ``trainer.fit`` is called, so the
run dir holds no ``checkpoints/`` and no ``metrics.json``. CLI checks run ``python -m experiments`` in a
subprocess (offline, tiny random BERT from ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments.config import config_dir
from experiments.errors import ConfigError, DataError
from experiments.finetune.adversarial import FGM, PGD, find_embedding_module

NER_TRAIN = "john B-PER\nsmith I-PER\nlives O\nin O\nparis B-LOC\n\napple B-ORG\nshares O\nrose O\n"
NER_TEST = "john B-PER\nworks O\n\nparis B-LOC\nrose O\n"


def cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m experiments <overrides>`` offline, its Hydra run dir ``cwd/run``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *overrides, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a user error (exit code 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def assert_not_trained(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists(), "training started before the config error"
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model").exists()


@pytest.fixture
def ner_data(tmp_path) -> list[str]:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text(NER_TRAIN)
    (folder / "valid.txt").write_text(NER_TEST)
    (folder / "test.txt").write_text(NER_TEST)
    return [f"data.train_file={folder / 'train.txt'}", f"data.validation_file={folder / 'valid.txt'}",
            f"data.test_file={folder / 'test.txt'}", "data.batch_size=2"]


# ------------------------------------------------------------------------------ unknown choices


@pytest.mark.parametrize("group", ["task", "model", "finetune"])
def test_unknown_choice_lists_the_available_ones(group, tmp_path):
    proc = cli(f"{group}=no_such_{group}", cwd=tmp_path)
    assert proc.returncode == 2
    out = error_line(proc)  # one line, as every user error
    assert f"Could not find '{group}/no_such_{group}'" in out
    assert f"Available options in '{group}':" in out
    options = sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))
    assert options, f"no options found in conf/{group}"
    listed = out.split(f"Available options in '{group}':")[1]
    assert [o.strip() for o in listed.split(",")] == options
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists(), "nothing may be written for an unknown choice"


# ------------------------------------------------------------------------------------ LoRA targets


def test_lora_target_module_the_model_lacks_fails_before_training(tmp_path, tiny_encoder_dir, ner_data):
    proc = cli("task=ner", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
               "finetune=lora", "finetune.adapter.target_modules=[q_proj]", *ner_data, cwd=tmp_path)
    line = error_line(proc)
    assert "q_proj" in line and "BertForTokenClassification" in line, line
    assert_not_trained(tmp_path / "run")


def test_lora_target_modules_from_the_command_line_are_plain_python(tmp_path):
    from hydra.utils import instantiate

    from conftest import compose_config

    cfg = compose_config(["finetune=lora", "finetune.adapter.target_modules=[query,value]"], tmp_path)
    adapter = instantiate(cfg.finetune.adapter)
    assert isinstance(adapter.target_modules, set | list | tuple), type(adapter.target_modules)
    adapter.save_pretrained(tmp_path / "adapter")


def test_lora_build_model_raises_config_error_in_process(tiny_encoder_dir):
    from peft import LoraConfig

    from experiments.models.build import build_model

    for targets in (["q_proj"], ["query", "v_proj"]):
        with pytest.raises(ConfigError) as err:
            build_model(str(tiny_encoder_dir), head="sequence_classification", labels=["a", "b"],
                        adapter=LoraConfig(r=2, target_modules=targets))
        assert type(err.value) is ConfigError
        assert "v_proj" in str(err.value) or "q_proj" in str(err.value)


# ------------------------------------------------------------------------------ adversarial (FGM/PGD)


class NoEmbeddings(nn.Module):
    """An encoder with no get_input_embeddings(); its forward must never run."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x)


class NotImplementedEmbeddings(NoEmbeddings):
    def get_input_embeddings(self):  # what transformers' PreTrainedModel does without an embedding
        raise NotImplementedError


class NoneEmbeddings(NoEmbeddings):
    def get_input_embeddings(self):
        return None


@pytest.mark.parametrize("model_cls", [NoEmbeddings, NotImplementedEmbeddings, NoneEmbeddings])
@pytest.mark.parametrize("adversary", [FGM, PGD])
def test_adversary_without_embeddings_is_a_config_error(model_cls, adversary):
    model = model_cls()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ConfigError, match=f"{model_cls.__name__} has no get_input_embeddings"):
        with adversary().watch(model):
            model(torch.ones(1, 4))
    assert model.calls == 0, "the forward ran before the error"
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    with pytest.raises(ConfigError):
        find_embedding_module(model)


def test_word_plus_position_without_an_embeddings_module_is_a_config_error():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(10, 4)

        def get_input_embeddings(self):
            return self.table

    with pytest.raises(ConfigError, match="embeddings='word'"):
        find_embedding_module(Toy(), "word+position")


@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": 0}, {"epsilon": -1.0}, {"adv_weight": -0.5}, {"embeddings": "position"}],
)
def test_bad_adversary_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        FGM(**kwargs)
    with pytest.raises(ConfigError):
        PGD(**kwargs)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 1.5}, {"alpha": 0}])
def test_bad_pgd_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        PGD(**kwargs)


def test_adversary_without_embeddings_stops_the_first_step_before_any_update():
    """Through the training module: the first training_step raises before any forward or weight change."""
    from experiments.modules.token_classification import TokenClassificationModule

    model = NoEmbeddings()
    module = TokenClassificationModule(model=model, labels=["O", "B-X"], adversary=FGM())
    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.zeros(1, 3, dtype=torch.long)}
    with pytest.raises(ConfigError, match="get_input_embeddings"):
        module.training_step(batch, 0)
    assert model.calls == 0


def test_cli_bad_adversary_setting_fails_before_training(tmp_path, tiny_encoder_dir, ner_data):
    proc = cli("task=ner", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
               "finetune=pgd", "finetune.adversary.steps=0", *ner_data, cwd=tmp_path)
    assert proc.returncode != 0
    assert "steps must be an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_not_trained(tmp_path / "run")
    assert proc.returncode == 2
    assert "steps must be an integer >= 1" in error_line(proc)


BAD_PGD = ("finetune=pgd", "finetune.adversary.steps=0")


def test_cli_config_error_leaves_no_half_made_run_dir(tmp_path, tiny_encoder_dir, ner_data):
    """A run stopped by a user error before its first step leaves no run dir holding only config.yaml and
    a log, which would read as a run."""
    proc = cli("task=ner", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
               *BAD_PGD, *ner_data, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists(), sorted(p.name for p in (tmp_path / "run").iterdir())


def test_cli_config_error_in_a_used_run_dir_keeps_what_was_there(tmp_path, tiny_encoder_dir, ner_data):
    """The same error in a run dir that holds an earlier run's files (a reused ``hydra.run.dir``) removes
    nothing: the earlier metrics, checkpoint and config.yaml stay byte for byte."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    earlier = {run / "metrics.json": b'{"test/f1": 0.5}', run / "checkpoints" / "last.ckpt": b"\x00weights",
               run / "config.yaml": b"task_name: earlier\n"}
    for path, data in earlier.items():
        path.write_bytes(data)
    proc = cli("task=ner", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
               *BAD_PGD, *ner_data, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in earlier} == earlier


def test_cli_config_error_in_a_run_dir_without_config_adds_none(tmp_path, tiny_encoder_dir, ner_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("keep")
    proc = cli("task=ner", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
               *BAD_PGD, *ner_data, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (run / "metrics.json").read_text() == "keep" and not (run / "config.yaml").exists()


# --------------------------------------------------------------------------- data options (NER)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"scheme": "bilou2"}, "data.scheme"), ({"unknown_labels": "drop"}, "data.unknown_labels"),
     ({"separator": ""}, "data.separator")],
)
def test_ner_datamodule_options_are_config_errors(kwargs, fragment, tiny_tokenizer):
    from experiments.tasks.ner.datamodule import NERDataModule

    with pytest.raises(ConfigError, match=fragment):
        NERDataModule(tiny_tokenizer, **kwargs)


def test_ner_without_train_file_is_a_config_error(tiny_tokenizer):
    from experiments.tasks.ner.datamodule import NERDataModule

    with pytest.raises(ConfigError, match="data.train_file"):
        _ = NERDataModule(tiny_tokenizer).labels


# -------------------------------------------------------------- text classification: columns


def _classification_datamodule():
    return pytest.importorskip("experiments.tasks.classification.datamodule").TextClassificationDataModule


@pytest.mark.parametrize("option, column", [("label_column", "intent"), ("text_column", "utterance")])
def test_text_classification_column_that_does_not_exist(option, column, tmp_path, tiny_tokenizer):
    dm_cls = _classification_datamodule()
    train = tmp_path / "train.csv"
    train.write_text("text,label\nwhere is my card,card\nrefund my order,refund\n")
    dm = dm_cls(tiny_tokenizer, source="table", train_file=str(train), **{option: column})
    with pytest.raises(DataError) as err:
        _ = dm.labels
    assert type(err.value) is DataError
    assert str(err.value).startswith(f"{train}:1: no column {column!r}; columns found: 'text', 'label'")


def test_cli_text_classification_label_column_missing(tmp_path, tiny_encoder_dir):
    _classification_datamodule()
    train = tmp_path / "train.csv"
    train.write_text("text,label\nwhere is my card,card\nrefund my order,refund\nmy card,card\n")
    proc = cli("task=text_classification", f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
               "debug=limit", f"data.train_file={train}", "data.label_column=intent", cwd=tmp_path)
    line = error_line(proc)
    assert line.startswith(f"error: {train}:1: no column 'intent'; columns found: 'text', 'label'"), line
    assert_not_trained(tmp_path / "run")
