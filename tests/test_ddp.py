"""DDP on CPU through ``python -m experiments``: one run dir, rank-0 outputs, each test example scored once.

The 2-process run uses Lightning's launcher, which re-runs the command for rank 1; its test scores
must equal those of one process testing the same checkpoint (the test split has an odd number of
sentences, so a padded DistributedSampler would have scored one of them twice).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_resume import cli_env, write_conll


def test_ddp_cpu_one_run_dir_rank0_outputs_and_the_test_scores_of_one_process(run_cli, tmp_path, tiny_encoder_dir):
    data = write_conll(tmp_path / "data", train=12, validation=5, test=7)
    launch = tmp_path / "launch"
    launch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "trainer=ddp_cpu", f"model.name_or_path={tiny_encoder_dir}",
         "trainer.precision=32", "trainer.max_epochs=1", "~callbacks.progress_bar", "data.batch_size=2",
         "data.eval_batch_size=2", *data],  # no hydra.run.dir: the timestamped default
        cwd=launch, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr

    # Exactly one run dir, and nothing else in the launch dir.
    assert [p.name for p in launch.iterdir()] == ["outputs"]
    (run_dir,) = list((launch / "outputs" / "ner").iterdir())
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.json", "predictions.jsonl", "classification_report.txt", "model",
            "checkpoints", "csv", ".hydra", "__main__.log"} <= names
    # Rank 1 wrote no Hydra log file and no .hydra/ of its own (Lightning names its job train_ddp_process_1).
    assert not [n for n in names if n.endswith(".log") and n != "__main__.log"]
    assert "train_ddp_process" not in (run_dir / ".hydra" / "overrides.yaml").read_text()

    ddp = json.loads((run_dir / "metrics.json").read_text())
    ddp_rows = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(ddp_rows) == 7

    # One process, another eval batch size, the checkpoint the DDP run tested: the same scores.
    single, single_dir = run_cli("mode=test", f"ckpt_path={ddp['test/checkpoint']}", "trainer.accelerator=cpu",
                                 "data.eval_batch_size=3", "~callbacks.progress_bar", *data,
                                 run_dir=tmp_path / "single")
    scores = sorted(k for k in single if k.startswith("test/") and k not in ("test/checkpoint", "test/loss"))
    assert "test/f1" in scores and "test/accuracy" in scores
    assert {k: ddp[k] for k in scores} == {k: single[k] for k in scores}
    # Loss: mean over all labelled tokens; equal up to the order of the floating-point sums.
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], abs=1e-6)
    assert (single_dir / "predictions.jsonl").read_text().splitlines() == ddp_rows


def ddp_train(tmp_path, tiny_encoder_dir, overrides: list[str]) -> dict:
    """One epoch under ``trainer=ddp_cpu`` (2 gloo processes) into ``tmp_path/ddp``; its metrics.json."""
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "trainer=ddp_cpu", f"model.name_or_path={tiny_encoder_dir}",
         "trainer.precision=32", "trainer.max_epochs=1", "~callbacks.progress_bar", "data.batch_size=2",
         *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_ddp_cpu_answer_selection_scores_as_one_process(run_cli, tmp_path, tiny_encoder_dir):
    from test_resume import write_pairs

    data = write_pairs(tmp_path / "data")
    ddp = ddp_train(tmp_path, tiny_encoder_dir, [*data, "data.eval_batch_size=2"])
    assert ddp["test/messages"] == 5  # every test message scored once over the two ranks
    single, _ = run_cli("mode=test", f"ckpt_path={ddp['test/checkpoint']}", "trainer.accelerator=cpu",
                        "data.eval_batch_size=3", "~callbacks.progress_bar", *data, run_dir=tmp_path / "single")
    for key in ("test/recall@1", "test/recall@5", "test/mrr", "test/intent_match@1", "test/messages"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


def test_ddp_cpu_lora_scores_as_one_process(run_cli, tmp_path, tiny_encoder_dir):
    data = write_conll(tmp_path / "data", train=12, validation=5, test=7)
    ddp = ddp_train(tmp_path, tiny_encoder_dir, [*data, "finetune=lora", "data.eval_batch_size=2"])
    assert ddp["train/trainable_params"] < ddp["train/total_params"] / 2
    single, _ = run_cli("mode=test", f"ckpt_path={ddp['test/checkpoint']}", "finetune=lora", "trainer.accelerator=cpu",
                        "data.eval_batch_size=3", "~callbacks.progress_bar", *data, run_dir=tmp_path / "single")
    for key in ("test/f1", "test/precision", "test/recall", "test/accuracy"):
        assert ddp[key] == single[key], key


def test_ddp_cpu_sentence_classification_scores_as_one_process(run_cli, tmp_path, tiny_encoder_dir):
    from test_resume import write_texts

    data = write_texts(tmp_path / "data", train=12, validation=5, test=7)
    ddp = ddp_train(tmp_path, tiny_encoder_dir, [*data, "data.eval_batch_size=2"])
    rows = (tmp_path / "ddp" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 7  # 7 test texts over 2 ranks: each once, none padded in twice
    single, _ = run_cli("mode=test", f"ckpt_path={ddp['test/checkpoint']}", "trainer.accelerator=cpu",
                        "data.eval_batch_size=3", "~callbacks.progress_bar", *data, run_dir=tmp_path / "single")
    for key in ("test/accuracy", "test/f1_macro", "test/f1_weighted"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


def test_ddp_cpu_click_prediction_scores_as_one_process(run_cli, tmp_path, tiny_encoder_dir):
    data = ["task=recommendation", "recommender=two_tower"]
    ddp = ddp_train(tmp_path, tiny_encoder_dir, [*data, "data.eval_batch_size=8"])
    assert ddp["test/impressions"] == 10  # every test impression of the embedded sample once over two ranks
    single, _ = run_cli("mode=test", f"ckpt_path={ddp['test/checkpoint']}", "trainer.accelerator=cpu",
                        "data.eval_batch_size=20", "~callbacks.progress_bar", *data, run_dir=tmp_path / "single")
    for key in ("test/auc", "test/mrr", "test/ndcg@5", "test/ndcg@10", "test/impressions"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


@pytest.mark.slow
def test_ddp_cpu_predict_writes_every_sentence_once(run_cli, tmp_path, tiny_encoder_dir):
    # Each rank predicts its share (Lightning's unpadded predict sampler); rank 0 gathers and writes.
    data = write_conll(tmp_path / "data", train=20, validation=3, test=3)
    _, train_dir = run_cli("debug=limit", "trainer.accelerator=cpu", "~callbacks.progress_bar", *data)
    text = tmp_path / "input.txt"
    sentences = ["john works at google", "paris rose", "the bank of america", "apple shares fell", "my order"]
    text.write_text("\n".join(sentences) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "trainer=ddp_cpu", "mode=predict", "trainer.precision=32",
         f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}", f"model.name_or_path={tiny_encoder_dir}",
         f"data.predict_file={text}", "data.train_file=null", "data.validation_file=null", "data.test_file=null",
         "data.eval_batch_size=2", "hydra.run.dir=pred", "~callbacks.progress_bar"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert [" ".join(r["words"]) for r in rows] == sentences
    single, _ = run_cli("mode=predict", f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}",
                        f"data.predict_file={text}", "data.train_file=null", "data.validation_file=null",
                        "data.test_file=null", "trainer.accelerator=cpu", "~callbacks.progress_bar",
                        run_dir=tmp_path / "pred1")
    assert (tmp_path / "pred1" / "predictions.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows]


@pytest.mark.parametrize("given", [None, "runs/my run"])
def test_rank1_command_composes_to_rank0_run_dir_and_writes_nothing(given, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    from conftest import compose_config
    from experiments.config import config_dir
    from experiments.distributed import launch_overrides

    argv = ["trainer=ddp_cpu", *([f"hydra.run.dir={given}"] if given else [])]
    compose_config(argv)  # the global HydraConfig of rank 0, as @hydra.main sets it
    rank0_dir = HydraConfig.get().run.dir
    assert rank0_dir == given or rank0_dir.startswith("outputs/ner/")
    # What Lightning's launcher runs for rank 1, plus what our entry point adds there.
    monkeypatch.setattr(sys, "argv", ["experiments", *argv])
    command, _ = _hydra_subprocess_cmd(local_rank=1)
    child = list(command[-(len(argv) + 3):])
    child += launch_overrides(child, {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "1234"})
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=child, return_hydra_config=True)
    assert cfg.hydra.run.dir == rank0_dir
    assert cfg.hydra.output_subdir is None
    assert set(cfg.hydra.job_logging.handlers) == {"console"}  # stdout only: no log file in the run dir


def test_launch_overrides_and_rank_detection():
    from experiments.distributed import is_rank_zero, launch_overrides

    assert launch_overrides(["task=ner"], {}) == []
    assert is_rank_zero({}) and is_rank_zero({"RANK": "0", "LOCAL_RANK": "0", "SLURM_PROCID": "0"})
    for env in ({"LOCAL_RANK": "1"}, {"RANK": "3"}, {"NODE_RANK": "1"}, {"SLURM_PROCID": "2"}):
        assert not is_rank_zero(env)
    # srun: every task gets the same run dir from the job id (unless given), ranks > 0 write nothing.
    slurm = {"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train"}
    assert launch_overrides([], slurm) == ["hydra.run.dir=outputs/${task_name}/slurm-4242",
                                           "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    assert launch_overrides(["hydra.run.dir=x"], {**slurm, "SLURM_PROCID": "0"}) == []
    # torchrun: the rendezvous id; without one the run dir must be given.
    torchrun = {"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}
    assert launch_overrides([], torchrun) == ["hydra.run.dir=outputs/${task_name}/torchrun-abc"]
    with pytest.raises(ValueError, match="hydra.run.dir"):
        launch_overrides([], {**torchrun, "TORCHELASTIC_RUN_ID": "none"})


def test_eval_sampler_shares_every_example_exactly_once():
    from experiments.tasks.sampling import EvalSampler

    for size in (1, 6, 7):
        for world in (1, 2, 3):
            if size < world:
                continue
            shares = [list(EvalSampler(size, num_replicas=world, rank=r)) for r in range(world)]
            assert sorted(sum(shares, [])) == list(range(size))
            assert [len(EvalSampler(size, num_replicas=world, rank=r)) for r in range(world)] == list(map(len, shares))


def test_fsdp_config_composes_to_a_sharded_strategy_with_full_checkpoints(tmp_path):
    # Composition and the strategy object only: FSDP needs GPUs.
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    from conftest import compose_config

    cfg = compose_config(["trainer=fsdp", "trainer.precision=bf16-mixed"], output_dir=tmp_path)
    assert cfg.trainer.accelerator == "gpu"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
    assert [p._target_ for p in cfg.trainer.plugins] == ["experiments.callbacks.AtomicCheckpointIO"]
