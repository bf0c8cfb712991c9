"""Real data: MovieLens ml-latest-small converted to MIND format; counts and time-split sanity (seconds)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from experiments.tasks.recommendation.convert import Options, convert_movielens
from experiments.tasks.recommendation.mind import parse_time, read_split

pytestmark = pytest.mark.smoke

DATA = Path(os.environ.get("EXPERIMENTS_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
MOVIELENS = DATA / "recsys" / "movielens_latest_small"


@pytest.mark.skipif(not (MOVIELENS / "ratings.csv").exists(), reason=f"no MovieLens data in {MOVIELENS}")
def test_convert_real_movielens(tmp_path):
    with open(MOVIELENS / "ratings.csv", newline="") as fh:
        ratings = list(csv.DictReader(fh))
    clicks = {(f"U{r['userId']}", f"M{r['movieId']}"): int(r["timestamp"]) for r in ratings if float(r["rating"]) >= 4}

    conv = convert_movielens(MOVIELENS, Options(seed=42))
    s = conv.stats
    assert s["events"] == len(ratings) == 100_836
    assert s["clicks"] == len(clicks)
    t1, t2 = s["cutoffs"]["train_before"], s["cutoffs"]["test_from"]
    assert t1 < t2
    # Roughly 80/10/10 of the clicks by time (every click lands in exactly one impression).
    shares = [s[n]["clicks"] / s["clicks"] for n in ("train", "dev", "test")]
    assert sum(s[n]["clicks"] for n in ("train", "dev", "test")) == s["clicks"]
    assert shares[0] == pytest.approx(0.8, abs=0.02) and shares[1] == pytest.approx(0.1, abs=0.02)

    conv.write(tmp_path / "mind")
    bounds = {"train": (0, t1), "dev": (t1, t2), "test": (t2, 2**40)}
    for name, (lo, hi) in bounds.items():
        split = read_split(tmp_path / "mind" / name)
        assert len(split.impressions) == s[name]["impressions"] > 500
        for imp in split.impressions:
            t0 = parse_time(imp.time)
            assert lo <= t0 < hi
            assert all(lo <= clicks[(imp.user_id, p)] < hi for p in imp.positives)
            assert all(clicks[(imp.user_id, h)] < t0 for h in imp.history)  # no future click in history
            assert len(imp.negatives) <= 4 * len(imp.positives)
            assert not any((imp.user_id, n) in clicks for n in imp.negatives)
