"""task=recommendation end to end on the tiny BERT and the embedded MIND sample: both recommenders, LoRA
and FGM, MIND metrics, prediction.txt, predict mode from a checkpoint."""

from __future__ import annotations

import json

import pytest

from experiments.errors import ConfigError, DataError

METRIC_KEYS = ("test/auc", "test/mrr", "test/ndcg@5", "test/ndcg@10", "test/excluded_impressions")


def read_submission(path) -> dict[str, list[int]]:
    out = {}
    for line in path.read_text().splitlines():
        imp_id, ranks = line.split(" ")
        out[imp_id] = json.loads(ranks)
    return out


@pytest.mark.parametrize(
    "recommender,finetune",
    [("cross_encoder", "full"), ("two_tower", "full"), ("cross_encoder", "lora"), ("two_tower", "lora"),
     ("cross_encoder", "fgm")],
)
def test_fast_dev_run(run_cli, recommender, finetune):
    metrics, run_dir = run_cli("task=recommendation", f"recommender={recommender}", f"finetune={finetune}",
                               "debug=fast_dev_run", "data.batch_size=4")
    for key in METRIC_KEYS:
        assert key in metrics
    assert 0.0 <= metrics["test/auc"] <= 1.0 and metrics["test/impressions"] == 10
    if finetune == "lora":
        assert metrics["train/trainable_params"] < metrics["train/total_params"] / 2
    elif recommender == "two_tower":  # the unused [CLS] pooler (32 x 32 weights + 32 biases) stays frozen
        assert metrics["train/total_params"] - metrics["train/trainable_params"] == 32 * 32 + 32
    else:
        assert metrics["train/trainable_params"] == metrics["train/total_params"]
    assert "auc" in (run_dir / "classification_report.txt").read_text()
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    submission = read_submission(run_dir / "prediction.txt")
    assert [r["impression_id"] for r in records] == list(submission) == [str(i) for i in range(21, 31)]
    for r in records:
        assert sorted(submission[r["impression_id"]]) == list(range(1, len(r["candidates"]) + 1))
        assert submission[r["impression_id"]] == r["ranks"] and len(r["labels"]) == len(r["scores"])


def test_two_tower_fgm_then_predict_from_checkpoint(run_cli, tmp_path):
    metrics, run_dir = run_cli("task=recommendation", "recommender=two_tower", "finetune=fgm", "debug=limit",
                               "data.batch_size=4")
    header, *rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    for key in ("train/adv_loss", "train/clean_loss", "val/auc", "val/excluded_impressions"):
        assert key in cols
    excluded = [r.split(",")[cols.index("val/excluded_impressions")] for r in rows]
    assert "1.0" in excluded  # the dev impression without a click
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists() and (run_dir / "model" / "config.json").exists()

    from experiments.config import resource_path

    dev = resource_path("mind_sample/dev/behaviors.tsv")
    run_cli("task=recommendation", "recommender=two_tower", "mode=predict", f"ckpt_path={ckpt}",
            f"data.predict_file={dev}", run_dir=tmp_path / "pred")
    submission = read_submission(tmp_path / "pred" / "prediction.txt")
    assert list(submission) == [str(i) for i in range(11, 21)]
    assert all(sorted(r) == list(range(1, len(r) + 1)) for r in submission.values())
    assert (tmp_path / "pred" / "predictions.jsonl").exists()

    with pytest.raises(ConfigError, match="recommender=two_tower"):
        run_cli("task=recommendation", "recommender=cross_encoder", "mode=predict", f"ckpt_path={ckpt}",
                f"data.predict_file={dev}", run_dir=tmp_path / "pred2")


def test_malformed_mind_file_fails_before_training(run_cli, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "news.tsv").write_text("N1\tx\ty\tTitle one\nN2\tx\ty\tTitle two\n")
    (folder / "behaviors.tsv").write_text("1\tU1\tt\tN1\tN2-1 N7-0\n")
    with pytest.raises(DataError) as err:
        run_cli("task=recommendation", "debug=fast_dev_run", f"data.train_file={folder}")
    assert f"{folder / 'behaviors.tsv'}:1" in str(err.value) and "'N7'" in str(err.value)
