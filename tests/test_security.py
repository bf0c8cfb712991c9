"""Security defaults: no remote code, weights-only checkpoint reads, safetensors exports, no leaked secrets.

One tiny real run (``python -m experiments`` in a subprocess, so Hydra writes ``.hydra/`` as it does for a
user) is made with ``WANDB_API_KEY`` and ``HF_TOKEN`` set to fresh random values; every file it writes is
then searched for them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments.config import config_dir
from experiments.errors import ConfigError

NER_TRAIN = "john B-PER\nsmith I-PER\nlives O\nin O\nparis B-LOC\n\napple B-ORG\nshares O\nrose O\n"
NER_TEST = "john B-PER\nworks O\n\nparis B-LOC\nrose O\n"
LABELS = {"O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"}
SECRETS = {
    "WANDB_API_KEY": secrets.token_hex(20),
    "HF_TOKEN": "hf_" + secrets.token_hex(17),
    "HUGGING_FACE_HUB_TOKEN": "hf_" + secrets.token_hex(17),
}


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory, tiny_encoder_dir):
    """(run dir, completed process) of a 1-batch train/test/export run with secrets in the environment."""
    root = tmp_path_factory.mktemp("secret_run")
    data = root / "data"
    data.mkdir()
    (data / "train.txt").write_text(NER_TRAIN)
    (data / "valid.txt").write_text(NER_TEST)
    (data / "test.txt").write_text(NER_TEST)
    run_dir = root / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **SECRETS}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "task=ner", f"model.name_or_path={tiny_encoder_dir}",
         "trainer.precision=32", "debug=limit", "trainer.limit_train_batches=1",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=many", "data.batch_size=4",
         f"data.train_file={data / 'train.txt'}", f"data.validation_file={data / 'valid.txt'}",
         f"data.test_file={data / 'test.txt'}", f"hydra.run.dir={run_dir}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return run_dir, proc


# ------------------------------------------------------------------------------------------ secrets


def test_secrets_in_the_environment_are_written_nowhere(secret_run):
    run_dir, proc = secret_run
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {str(p.relative_to(run_dir)) for p in files}
    # The search must cover what a run writes: config dumps, Hydra's own dumps, logs, checkpoints, export.
    for expected in ("config.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
                     "csv/metrics.csv", "metrics.json", "model/config.json"):
        assert expected in names, f"{expected} not written; files: {sorted(names)}"
    assert any(n.startswith("checkpoints/") for n in names)
    assert any(n.startswith("tensorboard/") for n in names)
    for name, value in SECRETS.items():
        needle = value.encode()
        leaks = [str(p.relative_to(run_dir)) for p in files if needle in p.read_bytes()]
        assert not leaks, f"{name} written to {leaks}"
        assert value not in proc.stdout and value not in proc.stderr, f"{name} printed"


def test_resolved_config_holds_no_environment_secret(tmp_path, monkeypatch):
    """No config node interpolates a secret environment variable (e.g. ``${oc.env:WANDB_API_KEY}``)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    for path in Path(config_dir()).rglob("*.yaml"):
        text = path.read_text()
        for name in SECRETS:
            assert name not in text, f"{path} reads {name}"
    from conftest import compose_config
    from experiments.config import prepare

    for overrides in (["logger=wandb"], ["task=text_classification", "logger=many"], ["finetune=lora_fgm"]):
        cfg = prepare(compose_config(overrides, output_dir=tmp_path))
        dumped = OmegaConf.to_yaml(cfg)
        for value in SECRETS.values():
            assert value not in dumped


# ----------------------------------------------------------------------------------------- exports


def test_export_is_safetensors_only(secret_run):
    run_dir, _ = secret_run
    model_dir = run_dir / "model"
    assert (model_dir / "model.safetensors").is_file()
    pickled = [p.name for p in model_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert not pickled, f"pickle-based weights exported: {pickled}"
    assert not (model_dir / "pytorch_model.bin").exists()


# ------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_labels_reads_a_real_checkpoint_weights_only(secret_run, monkeypatch):
    from experiments.__main__ import _checkpoint_labels

    run_dir, _ = secret_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    labels = _checkpoint_labels(str(ckpt))
    exported = json.loads((run_dir / "model" / "config.json").read_text())["id2label"]
    assert labels == [exported[str(i)] for i in range(len(exported))]
    assert set(labels) == LABELS
    assert calls and all(c.get("weights_only") is True for c in calls), calls


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_checkpoint_is_never_executed(tmp_path):
    from experiments.__main__ import _checkpoint_labels

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"labels": ["O"]}, "payload": _Payload(marker)}, ckpt)
    with pytest.raises(ConfigError, match="not a loadable Lightning checkpoint"):
        _checkpoint_labels(str(ckpt))
    assert not marker.exists(), "a pickled payload ran while reading a checkpoint"
    # The check is real: a full unpickle does run it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_is_false_in_every_model_config(tmp_path):
    from conftest import compose_config

    models = sorted(Path(config_dir(), "model").glob("*.yaml"))
    assert models
    for path in models:
        assert OmegaConf.load(path).trust_remote_code is False, path
        cfg = compose_config([f"model={path.stem}"], output_dir=tmp_path)
        assert cfg.model.trust_remote_code is False, path.stem
    for path in Path(config_dir()).rglob("*.yaml"):
        assert "trust_remote_code: true" not in path.read_text().lower(), path


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    """Every ``from_pretrained`` of transformers' Auto classes, recorded as (class name, kwargs)."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "AutoModelForTokenClassification",
                 "AutoModelForSequenceClassification"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


@pytest.mark.parametrize("head", ["token_classification", "sequence_classification"])
def test_trust_remote_code_is_passed_only_when_set(head, tiny_encoder_dir, from_pretrained_calls):
    from experiments.models.build import build_model, load_tokenizer

    load_tokenizer(str(tiny_encoder_dir))
    build_model(str(tiny_encoder_dir), head=head, labels=["O", "B-X"])
    assert {name for name, _ in from_pretrained_calls} >= {"AutoConfig", "AutoTokenizer"}
    calls = from_pretrained_calls
    assert all(kw.get("trust_remote_code", False) is False for _, kw in calls), calls

    from_pretrained_calls.clear()
    load_tokenizer(str(tiny_encoder_dir), trust_remote_code=True)
    build_model(str(tiny_encoder_dir), head=head, labels=["O", "B-X"], trust_remote_code=True)
    assert from_pretrained_calls
    assert all(kw.get("trust_remote_code") is True for _, kw in from_pretrained_calls), from_pretrained_calls
