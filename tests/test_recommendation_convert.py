"""MovieLens / Amazon -> MIND conversion on hand-made samples: time split, no future click in a history,
seeded negatives, item text known before the first cut-off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.errors import ConfigError, DataError
from experiments.tasks.recommendation import convert
from experiments.tasks.recommendation.convert import (
    Event,
    Options,
    build_mind,
    convert_amazon,
    convert_movielens,
)
from experiments.tasks.recommendation.mind import NewsItem, parse_time, read_split

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,Heat (1995),Action|Crime
3,"American President, The (1995)",Comedy|Romance
4,Casino (1995),Crime|Drama
5,Babe (1995),Children|Drama
6,Sabrina (1995),Comedy
7,Balto (1995),(no genres listed)
8,Nixon (1995),Drama
9,Ace Ventura (1995),Comedy
10,Powder (1995),Drama|Sci-Fi
11,Othello (1995),Drama
12,Clueless (1995),Comedy|Romance
"""
# (user, movie, rating, time); cut-offs 1000 and 2000.
RATINGS = [
    (1, 1, 5.0, 100), (1, 2, 4.0, 200), (1, 3, 4.5, 300), (1, 6, 2.0, 150), (1, 4, 4.0, 1100), (1, 5, 5.0, 2100),
    (2, 2, 4.0, 110), (2, 1, 4.0, 1200), (2, 7, 5.0, 1250), (2, 8, 4.0, 2200),
    (3, 11, 1.0, 50), (3, 3, 4.0, 120), (3, 9, 4.5, 130), (3, 10, 4.0, 2300),
    (4, 1, 4.0, 140), (4, 12, 3.5, 160),
]
TAGS = "userId,movieId,tag,timestamp\n2,1,pixar,50\n3,1,Future tag,1500\n"
CUTOFFS = (1000, 2000)


def write_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text(MOVIES)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in RATINGS))
    (folder / "tags.csv").write_text(TAGS)
    return folder


def click_times() -> dict[tuple[str, str], int]:
    return {(f"U{u}", f"M{m}"): t for u, m, r, t in RATINGS if r >= 4}


def check_no_leakage(conv, clicks: dict[tuple[str, str], int], cutoffs) -> None:
    bounds = {"train": (float("-inf"), cutoffs[0]), "dev": (cutoffs[0], cutoffs[1]), "test": (cutoffs[1], float("inf"))}
    user_clicks: dict[str, set[str]] = {}
    for (u, i) in clicks:
        user_clicks.setdefault(u, set()).add(i)
    for name, (_, impressions) in conv.splits.items():
        lo, hi = bounds[name]
        for imp in impressions:
            t0 = parse_time(imp.time)
            pos = imp.positives
            assert pos, "every impression has a click"
            times = [clicks[(imp.user_id, p)] for p in pos]
            assert min(times) == t0 and all(lo <= t < hi for t in times), (name, imp)
            # No click at or after the impression time is in the history, and history is in time order.
            hist_times = [clicks[(imp.user_id, h)] for h in imp.history]
            assert all(t < t0 for t in hist_times) and hist_times == sorted(hist_times)
            # Negatives are never clicked by the user, at any time.
            assert not set(imp.negatives) & user_clicks[imp.user_id]


def test_movielens_time_split_without_leakage(tmp_path):
    conv = convert_movielens(write_movielens(tmp_path / "ml"), Options(cutoffs=CUTOFFS, negatives=2))
    check_no_leakage(conv, click_times(), CUTOFFS)
    train, dev, test = (conv.splits[n][1] for n in ("train", "dev", "test"))
    assert [(i.user_id, sorted(i.positives)) for i in train] == [
        ("U1", ["M1", "M2", "M3"]), ("U2", ["M2"]), ("U3", ["M3", "M9"]), ("U4", ["M1"])]
    assert [(i.user_id, sorted(i.positives), i.history) for i in dev] == [
        ("U1", ["M4"], ["M1", "M2", "M3"]), ("U2", ["M1", "M7"], ["M2"])]
    assert [(i.user_id, i.history) for i in test] == [
        ("U1", ["M1", "M2", "M3", "M4"]), ("U2", ["M2", "M1", "M7"]), ("U3", ["M3", "M9"])]
    assert [i.impression_id for i in test] == ["1", "2", "3"]
    # U1's first impression (t=100): only M11 (seen at t=50) and M1 exist yet; M1 is U1's click.
    assert train[0].negatives == ["M11"]
    # Elsewhere K=2 negatives per click, among items seen by the impression time.
    assert len(dev[1].negatives) == 4
    assert conv.stats["train"]["impressions"] == 4 and conv.stats["clicks"] == 13


def test_item_text_uses_genres_and_tags_written_before_the_first_cut_off(tmp_path):
    conv = convert_movielens(write_movielens(tmp_path / "ml"), Options(cutoffs=CUTOFFS))
    news = {n.news_id: n for n in conv.splits["train"][0]}
    assert news["M1"].title == "Toy Story (1995)" and news["M1"].category == "adventure"
    assert news["M1"].abstract == "Genres: Adventure, Animation, Children. Tags: pixar."
    assert news["M3"].title == "American President, The (1995)"


def test_negatives_are_seeded(tmp_path):
    folder = write_movielens(tmp_path / "ml")
    a = convert_movielens(folder, Options(cutoffs=CUTOFFS, seed=1))
    b = convert_movielens(folder, Options(cutoffs=CUTOFFS, seed=1))
    assert [[(i.candidates, i.labels) for i in a.splits[n][1]] for n in a.splits] == \
        [[(i.candidates, i.labels) for i in b.splits[n][1]] for n in b.splits]
    # A larger synthetic log: another seed draws other negatives.
    events = [Event(f"U{u}", f"I{(u * 7 + k) % 60}", 10 * k + u, 5.0 if k % 2 else 1.0)
              for u in range(20) for k in range(30)]
    items = {f"I{i}": NewsItem(f"I{i}", title=f"item {i}") for i in range(60)}
    x = build_mind(events, items, Options(seed=1))
    y = build_mind(events, items, Options(seed=1))
    z = build_mind(events, items, Options(seed=2))
    cands = lambda c: [i.candidates for n in c.splits for i in c.splits[n][1]]  # noqa: E731
    assert cands(x) == cands(y) and cands(x) != cands(z)
    clicks = {(e.user, e.item): e.time for e in convert.dedupe(events) if e.rating >= 4}
    check_no_leakage(x, clicks, (x.stats["cutoffs"]["train_before"], x.stats["cutoffs"]["test_from"]))


def test_max_clicks_groups_and_quantile_cut_offs(tmp_path):
    conv = convert_movielens(write_movielens(tmp_path / "ml"), Options(cutoffs=CUTOFFS, max_clicks=2))
    u1 = [i for i in conv.splits["train"][1] if i.user_id == "U1"]
    assert [sorted(i.positives) for i in u1] == [["M1", "M2"], ["M3"]]
    assert u1[1].history == ["M1", "M2"]
    assert convert.time_cutoffs(list(range(10)), (0.8, 0.1, 0.1)) == (8, 9)
    with pytest.raises(ConfigError, match="no impressions"):
        convert_movielens(tmp_path / "ml", Options(cutoffs=(5000, 6000)))


def test_written_folders_read_back_and_cli(tmp_path, capsys):
    folder = write_movielens(tmp_path / "ml")
    out = tmp_path / "mind"
    assert convert.main(["movielens", str(folder), str(out), "--cutoffs", "1000", "2000", "--seed", "3"]) == 0
    for name in ("train", "dev", "test"):
        split = read_split(out / name)
        assert split.labelled and split.impressions
    stats = json.loads((out / "conversion.json").read_text())
    assert stats["cutoffs"]["train_before"] == 1000 and stats["options"]["seed"] == 3
    assert "written to" in capsys.readouterr().out
    assert convert.main(["movielens", str(tmp_path / "nowhere"), str(out)]) == 2


def review(user: str, asin: str, t: int, overall: float, summary: str, text: str = "ok") -> str:
    return json.dumps({"overall": overall, "verified": True, "reviewerID": user, "asin": asin,
                       "style": {"Size:": " M"}, "reviewText": text, "summary": summary, "unixReviewTime": t},
                      indent=2)


def test_amazon_concatenated_json(tmp_path):
    rows = [
        review("A", "B1", 100, 5, "Great shoes"), review("A", "B1", 100, 5, "Great shoes"),  # duplicate
        review("B", "B1", 120, 4, "Nice"), review("B", "B2", 110, 2, "Bad"), review("C", "B3", 130, 5, "Warm"),
        review("A", "B2", 1100, 4, "Late summary"), review("C", "B1", 1500, 5, "Dev click"),
        review("A", "B3", 2100, 5, "Test click"), review("B", "B4", 2200, 4, "New item"),
    ]
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(rows) + "\n")
    conv = convert_amazon(path, Options(cutoffs=CUTOFFS, negatives=1))
    assert conv.stats["events"] == 8  # the duplicate counts once
    news = {n.news_id: n for name in conv.splits for n in conv.splits[name][0]}
    assert news["B1"].title == "Great shoes; Nice"
    assert news["B2"].title == "Bad"  # the review after the cut-off is not used
    assert news["B4"].title == "New item" and conv.stats["items_text_after_cutoff"] == 1
    clicks = {(u, i): t for u, i, t in [("A", "B1", 100), ("B", "B1", 120), ("C", "B3", 130), ("A", "B2", 1100),
                                         ("C", "B1", 1500), ("A", "B3", 2100), ("B", "B4", 2200)]}
    check_no_leakage(conv, clicks, CUTOFFS)


def test_amazon_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(review("A", "B1", 100, 5, "x") + "\n{\n  \"overall\": 5,\n  oops\n}\n")
    with pytest.raises(DataError) as err:
        convert.read_amazon(path)
    assert err.value.line == 15  # 12 lines of the first object, then "{", "overall", "oops"
    path.write_text(json.dumps({"overall": 5, "asin": "B1", "unixReviewTime": 3}) + "\n")
    with pytest.raises(DataError, match="reviewerID"):
        convert.read_amazon(path)
