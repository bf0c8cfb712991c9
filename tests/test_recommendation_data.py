"""MIND reader errors, the embedded sample, negative sampling and the batches of both recommenders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.config import resource_path
from experiments.errors import ConfigError, DataError
from experiments.tasks.recommendation.datamodule import (
    EvalBatches,
    RecommendationDataModule,
    TrainSamples,
    sample_negatives,
)
from experiments.tasks.recommendation.mind import (
    Impression,
    format_time,
    parse_time,
    read_behaviors,
    read_news,
    read_split,
)

NEWS = "N1\tsports\tfootball\tLate goal wins the cup\tAbstract\thttps://x\t[]\t[]\nN2\tfinance\tmarkets\tShares rose\nN3\ttech\tai\tNew chip\n"
BEHAVIORS = "1\tU1\t11/11/2019 9:05:58 AM\tN1\tN2-1 N3-0\n2\tU2\t11/11/2019 9:06:00 AM\t\tN1-0 N2-1 N3-0\n"
SAMPLE = Path(resource_path("mind_sample"))


def write_split(folder: Path, news: str = NEWS, behaviors: str = BEHAVIORS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text(news)
    (folder / "behaviors.tsv").write_text(behaviors)
    return folder


def test_reads_a_split_and_tolerates_missing_trailing_news_columns(tmp_path):
    split = read_split(write_split(tmp_path / "s"))
    assert split.labelled
    assert split.news["N2"].title == "Shares rose" and split.news["N2"].abstract == ""
    first, second = split.impressions
    assert first.history == ["N1"] and first.candidates == ["N2", "N3"] and first.labels == [1, 0]
    assert second.history == [] and second.positives == ["N2"] and second.negatives == ["N1", "N3"]
    assert split.news["N1"].text(["title", "abstract"]) == "Late goal wins the cup. Abstract"


def test_unlabelled_impressions(tmp_path):
    split = read_split(write_split(tmp_path / "s", behaviors="7\tU1\t11/11/2019 9:05:58 AM\tN1\tN2 N3\n"))
    assert not split.labelled and split.impressions[0].labels is None
    assert split.impressions[0].candidates == ["N2", "N3"]


@pytest.mark.parametrize(
    "news,behaviors,line,fragment",
    [
        (NEWS + "N2\tx\ty\tAgain\n", BEHAVIORS, ("news.tsv", 4), "duplicated news id 'N2' (first on line 2)"),
        ("N1\tsports\n", BEHAVIORS, ("news.tsv", 1), "2 tab-separated columns"),
        (NEWS, "1\tU1\tt\tN9\tN2-1 N3-0\n", ("behaviors.tsv", 1), "history news id 'N9' is not in news.tsv"),
        (NEWS, BEHAVIORS + "3\tU3\tt\t\tN2-1 N8-0\n", ("behaviors.tsv", 3), "impression news id 'N8' is not in"),
        (NEWS, "1\tU1\tt\t\tN2-2 N3-0\n", ("behaviors.tsv", 1), "malformed impression token 'N2-2'"),
        (NEWS, "1\tU1\tt\t\tN2- N3-0\n", ("behaviors.tsv", 1), "malformed impression token 'N2-'"),
        (NEWS, "1\tU1\tt\t\t-1 N3-0\n", ("behaviors.tsv", 1), "malformed impression token '-1'"),
        (NEWS, "1\tU1\tt\t\tN2-1 N3\n", ("behaviors.tsv", 1), "mixes labelled"),
        (NEWS, BEHAVIORS + "3\tU1\tt\t\tN2 N3\n", ("behaviors.tsv", 3), "mixes labelled"),
        (NEWS, "1\tU1\tt\tN1\n", ("behaviors.tsv", 1), "4 tab-separated columns; expected 5"),
        (NEWS, "1\tU1\tt\tN1\t \n", ("behaviors.tsv", 1), "no candidates"),
        (NEWS, BEHAVIORS + "1\tU3\tt\t\tN2-1\n", ("behaviors.tsv", 3), "duplicated impression id '1'"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, news, behaviors, line, fragment):
    folder = write_split(tmp_path / "s", news, behaviors)
    with pytest.raises(DataError) as err:
        read_split(folder)
    name, number = line
    assert err.value.path == str(folder / name) and err.value.line == number
    assert fragment in str(err.value)
    assert f"{folder / name}:{number}" in str(err.value)


def test_missing_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_news(tmp_path / "news.tsv")
    with pytest.raises(DataError, match="file not found"):
        read_behaviors(tmp_path / "behaviors.tsv")


def test_time_format_round_trip():
    assert format_time(0) == "1/1/1970 12:00:00 AM"
    assert format_time(13 * 3600 + 5) == "1/1/1970 1:00:05 PM"
    assert parse_time(format_time(1_573_463_158)) == 1_573_463_158
    assert parse_time("11/11/2019 9:05:58 AM") == parse_time(format_time(parse_time("11/11/2019 9:05:58 AM")))


def test_embedded_sample_is_valid_and_small():
    for name in ("train", "dev", "test"):
        split = read_split(SAMPLE / name)
        assert split.labelled and len(split.impressions) == 10 and len(split.news) == 20
    dev = read_split(SAMPLE / "dev").impressions
    assert sum(1 for imp in dev if not imp.positives) == 1  # excluded on purpose


def test_sample_negatives_with_and_without_replacement():
    rng = np.random.default_rng(0)
    few = sample_negatives(["a", "b"], 4, rng)
    assert len(few) == 4 and set(few) <= {"a", "b"}
    many = sample_negatives([str(i) for i in range(10)], 4, rng)
    assert len(set(many)) == 4
    with pytest.raises(ValueError):
        sample_negatives([], 4, rng)


def _impressions() -> list[Impression]:
    negs = [f"N{i}" for i in range(10, 30)]
    return [
        Impression("1", "U1", "t", ["N1"], ["N2", *negs, "N3"], [1] + [0] * len(negs) + [1]),
        Impression("2", "U2", "t", [], ["N4", "N5"], [0, 1]),
        Impression("3", "U3", "t", [], ["N6", "N7"], [1, 1]),  # no negative: no sample
    ]


def test_train_samples_are_seeded_per_epoch_and_never_use_clicks_as_negatives():
    imps = _impressions()
    a, b = TrainSamples(imps, 4, seed=7), TrainSamples(imps, 4, seed=7)
    assert len(a) == 3  # two clicks of impression 1, one of impression 2
    assert [a[i] for i in range(3)] == [b[i] for i in range(3)]
    first = [a[i]["candidates"] for i in range(3)]
    a.set_epoch(1)
    assert [a[i]["candidates"] for i in range(3)] != first
    assert [TrainSamples(imps, 4, seed=8)[i]["candidates"] for i in range(3)] != first
    for i in range(3):
        sample = a[i]
        clicked = set(imps[sample["impression_index"]].positives)
        assert sample["candidates"][0] in clicked and not clicked & set(sample["candidates"][1:])
        assert sample["labels"] == [1, 0, 0, 0, 0] and len(sample["candidates"]) == 5
    # Impression 2 has one negative: drawn K times (with replacement).
    assert a[2]["candidates"] == ["N5"] + ["N4"] * 4


def test_eval_batches_pack_whole_impressions():
    batches = EvalBatches(_impressions(), max_candidates=5)
    assert batches.batches == [[0], [1, 2]]
    assert [r["impression_index"] for r in batches[1]] == [1, 2]


@pytest.mark.parametrize("architecture", ["cross_encoder", "two_tower"])
def test_batches_of_both_recommenders(tiny_tokenizer, architecture):
    dm = RecommendationDataModule(tiny_tokenizer, architecture=architecture, train_file=str(SAMPLE / "train"),
                                  validation_file=str(SAMPLE / "dev"), max_history=2, batch_size=3,
                                  eval_batch_size=10)
    assert dm.labels == ["score"] and set(dm.files) == {"train", "validation"}
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == (3, 5) and batch["labels"][:, 0].eq(1).all()
    assert batch["candidate_mask"].all()
    ids = batch["inputs"]["input_ids"]
    if architecture == "cross_encoder":
        assert ids.shape[0] == 15
        assert (ids == tiny_tokenizer.sep_token_id).sum(1).eq(2).all()  # pairs
    else:
        assert batch["history_index"].shape[1] <= 2
        assert batch["candidate_index"].max() < ids.shape[0]
        assert ids.shape[0] == len(set(batch["candidate_index"].flatten().tolist()) |
                                   set(batch["history_index"].flatten().tolist()) - {-1})
    val = list(dm.val_dataloader())
    seen = [i for b in val for i in b["impression_index"].tolist()]
    assert seen == list(range(10))
    assert all(b["candidate_mask"].sum() <= 10 or len(b["impression_index"]) == 1 for b in val)


def test_cross_encoder_user_text_is_most_recent_history_first(tiny_tokenizer):
    dm = RecommendationDataModule(tiny_tokenizer, train_file=str(SAMPLE / "train"), max_history=2)
    news = dm.splits["train"].news
    assert dm._user_text("train", ["N1", "N2", "N3"]) == f"{news['N3'].title} ; {news['N2'].title}"
    assert dm._user_text("train", []) == ""


def test_data_dir_fills_missing_files_and_unlabelled_test_is_not_evaluated(tmp_path, tiny_tokenizer):
    root = tmp_path / "mind"
    write_split(root / "train")
    write_split(root / "dev")
    write_split(root / "test", behaviors="1\tU1\tt\tN1\tN2 N3\n")
    dm = RecommendationDataModule(tiny_tokenizer, data_dir=str(root))
    assert set(dm.splits) == {"train", "validation", "test"}
    assert "test" not in dm.files and "train" in dm.files


def test_training_split_needs_labels(tmp_path, tiny_tokenizer):
    folder = write_split(tmp_path / "t", behaviors="1\tU1\tt\tN1\tN2 N3\n")
    dm = RecommendationDataModule(tiny_tokenizer, train_file=str(folder))  # reads nothing yet
    with pytest.raises(DataError, match="no click labels"):
        dm.labels  # noqa: B018
    folder = write_split(tmp_path / "u", behaviors="1\tU1\tt\tN1\tN2-1 N3-1\n")
    with pytest.raises(DataError, match="both a click and a non-click"):
        RecommendationDataModule(tiny_tokenizer, train_file=str(folder)).labels  # noqa: B018
    with pytest.raises(ConfigError, match="item_fields"):
        RecommendationDataModule(tiny_tokenizer, train_file=str(folder), item_fields=["body"]).labels  # noqa: B018
