"""Exact resume: a run killed mid-epoch and resumed with ``ckpt_path=last`` ends like an uninterrupted one.

Also: checkpoints are written atomically (a save that fails midway leaves the previous file loadable),
and the training order is a function of ``(seed, epoch)`` with a position that survives a restore.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ENTITIES = [("john smith", "PER"), ("paris", "LOC"), ("new york", "LOC"), ("google", "ORG"),
            ("bank of america", "ORG"), ("apple", "ORG")]
FILLERS = ["the", "works", "at", "lives", "in", "profit", "rose", "fell", "sales", "shares", "my", "order", "."]


def conll_sentences(n: int, seed: int) -> str:
    """``n`` random CoNLL sentences (2-6 chunks, words of the tiny vocabulary, IOB2 tags)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(2, 6)):
            if rng.random() < 0.3:
                words, tag = rng.choice(ENTITIES)
                lines += [f"{w} {'B' if i == 0 else 'I'}-{tag}" for i, w in enumerate(words.split())]
            else:
                lines.append(f"{rng.choice(FILLERS)} O")
        sentences.append("\n".join(lines))
    return "\n\n".join(sentences) + "\n"


def write_conll(folder: Path, train: int, validation: int, test: int) -> list[str]:
    """Write train/valid/test files; returns the ``data.*_file`` overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    overrides = []
    for split, n, seed in (("train", train, 1), ("validation", validation, 2), ("test", test, 3)):
        path = folder / f"{split}.txt"
        path.write_text(conll_sentences(n, seed))
        overrides.append(f"data.{split}_file={path}")
    return overrides


def write_pairs(folder: Path) -> list[str]:
    """50 (message, answer, intent) rows, 5 intents: carved 40 / 5 / 5 (task=support_response)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["refund", "order", "card", "cancel", "bank"]
    lines = ["instruction,response,intent"]
    for n in range(50):
        intent = words[n % 5]
        lines.append(f"where is my {intent} {n},the {intent} answer {n} {FILLERS[n % len(FILLERS)]},{intent}")
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return ["task=support_response", f"data.train_file={path}"]


def write_texts(folder: Path, train: int = 40, validation: int = 5, test: int = 7) -> list[str]:
    """Sentence-classification CSVs (3 labels); returns the task and ``data.*_file`` overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["refund", "card", "order", "cancel", "bank", "shares"]
    labels = ["money", "shop", "market"]
    out = ["task=text_classification"]
    for split, n in (("train", train), ("validation", validation), ("test", test)):
        rows = ["text,label"] + [f"{words[i % 6]} my {words[(i * 5) % 6]} {i},{labels[i % 3]}" for i in range(n)]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
        out.append(f"data.{split}_file={folder / f'{split}.csv'}")
    return out


# (data, extra overrides, a test metric, optimizer steps per epoch at batch 2): NER, NER with LoRA, answer
# selection, sentence classification, and click prediction on the embedded MIND sample (12 training clicks, batch 1).
FAMILIES = {
    "ner": (lambda d: write_conll(d, train=40, validation=5, test=5), [], "test/f1", 20),
    "ner_lora": (lambda d: write_conll(d, train=40, validation=5, test=5), ["finetune=lora"], "test/f1", 20),
    "support_response": (write_pairs, [], "test/mrr", 20),
    "classification": (write_texts, [], "test/accuracy", 20),
    "recommendation": (lambda d: ["task=recommendation", "recommender=two_tower"], ["data.batch_size=1"],
                       "test/auc", 12),
}


def cli_env() -> dict[str, str]:
    """Offline, and one thread per process: tiny models gain nothing from more, and the test processes
    share a small machine (oversubscribed threads make them many times slower)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


# Runs the entry point with every training step slowed down, so that the test can kill it mid-epoch.
SLOW_ENTRY = """
import time
from experiments.modules.base import EncoderModule
step = EncoderModule.training_step
def slow_step(self, batch, batch_idx):
    time.sleep(SLEEP)
    return step(self, batch, batch_idx)
EncoderModule.training_step = slow_step
from experiments.__main__ import main
main()
"""


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _comparable(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in ("train/fit_time_s", "peak_rss_mib")}
    for key in ("test/checkpoint", "train/best_checkpoint"):
        out[key] = Path(out[key]).name
    return out


def _kill_mid_second_epoch(victim: subprocess.Popen, last: Path, per_epoch: int = 20, timeout: float = 300) -> None:
    """SIGKILL ``victim`` as soon as ``last`` holds a state in the middle of epoch 1 (steps 21..39 of 20 per epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and victim.poll() is None:
        if last.is_file() and per_epoch < _state(last)["global_step"] < 2 * per_epoch:
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    victim.kill()
    victim.wait()


@pytest.mark.parametrize("family", FAMILIES)
def test_killed_mid_epoch_run_resumes_to_the_same_weights_and_metrics(run_cli, tmp_path, tiny_encoder_dir, family):
    # 40 training examples, batch 2: 20 optimizer steps per epoch, 2 epochs, linear warmup/decay; last.ckpt every
    # 3 steps. The run to kill is a process of its own (steps slowed down so that the kill lands mid-epoch);
    # the uninterrupted reference and the resumed run go through the same entry point in this process.
    common = [
        "trainer.accelerator=cpu", "~callbacks.progress_bar", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_train_steps=3", "data.batch_size=2", "optimizer.lr=1e-3", "seed=3",
        *FAMILIES[family][0](tmp_path / "data"), *FAMILIES[family][1],
    ]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    entry = tmp_path / "slow_entry.py"
    entry.write_text("SLEEP = 0.2\n" + SLOW_ENTRY)
    with open(tmp_path / "victim.log", "w") as log:
        victim = subprocess.Popen(
            [sys.executable, str(entry), f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
             "logger=csv", *common, f"hydra.run.dir={run_dir}"],
            env=cli_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    per_epoch = FAMILIES[family][3]
    killer = threading.Thread(target=_kill_mid_second_epoch, args=(victim, last, per_epoch))
    killer.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the victim (OMP_NUM_THREADS=1): the same kernels, no oversubscription
    try:
        reference, _ = run_cli(*common, run_dir=ref_dir)
        killer.join()
        assert victim.returncode == -signal.SIGKILL, (tmp_path / "victim.log").read_text()[-3000:]
        killed_at = _state(last)
        assert per_epoch < killed_at["global_step"] < 2 * per_epoch and killed_at["epoch"] == 1  # mid-epoch
        assert not (run_dir / "metrics.json").exists()
        resumed, _ = run_cli(*common, "ckpt_path=last", run_dir=run_dir)
    finally:
        killer.join()
        torch.set_num_threads(threads)

    a, b = _state(ref_dir / "checkpoints" / "last.ckpt"), _state(last)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, 2 * per_epoch)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # Optimizer moments and the LR schedule followed the same path.
    for ref_state, res_state in zip(a["optimizer_states"][0]["state"].values(),
                                    b["optimizer_states"][0]["state"].values(), strict=True):
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ref_state[name], res_state[name])
    assert a["lr_schedulers"] == b["lr_schedulers"]
    # Same best checkpoint, same test scores, same exported weights.
    assert _comparable(resumed) == _comparable(reference) and FAMILIES[family][2] in reference
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert _comparable(saved) == _comparable(json.loads((ref_dir / "metrics.json").read_text()))
    from safetensors.torch import load_file

    ref_model, res_model = load_file(ref_dir / "model" / "model.safetensors"), load_file(run_dir / "model" / "model.safetensors")
    assert all(torch.equal(v, res_model[k]) for k, v in ref_model.items())


def test_ckpt_path_last_without_a_checkpoint_names_the_way_out(run_cli, tmp_path):
    from experiments.errors import ConfigError

    with pytest.raises(ConfigError, match="hydra.run.dir"):
        run_cli("debug=fast_dev_run", "ckpt_path=last", *write_conll(tmp_path / "data", 4, 2, 2))


def test_interrupted_save_keeps_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from experiments.callbacks import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(17)  # a partial file, then the "kill"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()

    kept = torch.load(path, weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_trainer_writes_checkpoints_through_the_atomic_plugin(tmp_path):
    from hydra.utils import instantiate

    from conftest import compose_config
    from experiments.callbacks import AtomicCheckpointIO, LastCheckpoint, NonFiniteLossGuard

    cfg = compose_config(["trainer.accelerator=cpu", "trainer.precision=32"], output_dir=tmp_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert any(isinstance(c, LastCheckpoint) for c in trainer.callbacks)
    assert any(isinstance(c, NonFiniteLossGuard) for c in trainer.callbacks)


def test_training_order_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    from experiments.tasks.sampling import ResumableDataLoader, TrainSampler

    lengths = [random.Random(0).randint(3, 40) for _ in range(23)]

    def loader(world: int = 1, rank: int = 0) -> ResumableDataLoader:
        sampler = TrainSampler(lengths, 4, seed=5, num_replicas=world, rank=rank)
        return ResumableDataLoader(list(range(23)), batch_size=4, sampler=sampler, collate_fn=list)

    first = loader()
    torch.manual_seed(123)  # the global RNG plays no part
    epoch0 = list(first)
    first.sampler.set_epoch(1)
    epoch1 = list(first)
    assert sorted(sum(epoch0, [])) == list(range(23)) and epoch0 != epoch1
    other = loader()
    assert list(other) == epoch0

    # Interrupted after 3 batches of epoch 1: the state restores the rest of that epoch only.
    first.sampler.set_epoch(1)
    it = iter(first)
    consumed = [next(it) for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 3, "num_replicas": 1}
    fresh = loader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(1)
    assert consumed + list(fresh) == epoch1
    fresh.sampler.set_epoch(2)
    assert len(list(fresh)) == len(fresh)  # the next epoch starts from its first batch

    # Two ranks: equal numbers of batches, together every example at least once.
    shares = [list(loader(2, r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1])
    assert set(sum(shares[0] + shares[1], [])) == set(range(23))


def test_a_sigterm_stops_the_run_with_exit_143_and_a_resume_state(tmp_path, tiny_encoder_dir):
    """Lightning ends a SIGTERM'd fit as SystemExit(None), exit code 0: a scheduler or sweep would count the
    pre-empted run as finished. The CLI exits 143 (128 + 15), names how to resume, and writes no metrics."""
    run_dir = tmp_path / "run"
    entry = tmp_path / "slow_entry.py"
    entry.write_text("SLEEP = 0.2\n" + SLOW_ENTRY)
    victim = subprocess.Popen(
        [sys.executable, str(entry), f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32",
         "trainer.accelerator=cpu", "~callbacks.progress_bar", "trainer.max_epochs=2", "data.batch_size=2",
         "callbacks.last_checkpoint.every_n_train_steps=3", *write_conll(tmp_path / "data", 40, 5, 5),
         f"hydra.run.dir={run_dir}"],
        env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None and not last.is_file():
        time.sleep(0.05)
    victim.send_signal(signal.SIGTERM)
    out, _ = victim.communicate(timeout=300)
    assert victim.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM" in out and "ckpt_path=last" in out
    assert last.is_file() and not (run_dir / "metrics.json").exists()
