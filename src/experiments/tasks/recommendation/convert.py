"""Convert rating logs (MovieLens, Amazon reviews) into MIND-format folders ``train/ dev/ test/``.

    python -m experiments.tasks.recommendation.convert movielens ../shared/data/recsys/movielens_latest_small \\
        outputs/data/movielens_mind
    python -m experiments.tasks.recommendation.convert amazon \\
        ../shared/data/recsys/amazon_fashion_5/AMAZON_FASHION_5.json outputs/data/amazon_fashion_mind

The rules (the same for every source):

* A click is a rating >= ``min_rating`` (4 stars); a user's repeated interactions with an item count once,
  at the first one.
* Split by time, never at random: two global cut-offs t1 < t2 (default: the 80% and 90% quantiles of the
  click timestamps; or given) make train (t < t1), dev (t1 <= t < t2) and test (t >= t2). Each split holds
  the clicks of its period.
* Impressions: a user's clicks of one period, in time order, cut into groups of at most ``max_clicks``.
  The impression time is its first click's; its history is the user's clicks strictly before that time
  (all periods, oldest first, the last ``max_history``), so no click at or after the impression time is
  ever in a history.
* Candidates: the impression's clicks plus ``negatives`` (K) non-clicked items per click, sampled
  without replacement from the items already seen in the log at the impression time (any rating), never
  an item the user clicks at any time (no false negatives); fewer when fewer exist. Candidates are
  shuffled. Sampling is seeded per impression (seed, user, period, group): the output depends only on
  the input and the options.
* Item text is what was known before t1: MovieLens title, genres and the tags written before t1; Amazon
  the summaries and texts of the item's reviews written before t1 (the earliest ``max_reviews``; an item
  first reviewed after t1 uses its earliest reviews, counted in ``items_text_after_cutoff``).

Each split folder gets the news rows its impressions and histories use; ``conversion.json`` records the
options, the cut-offs and the counts.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from experiments.errors import ConfigError, DataError, ExperimentsError
from experiments.tasks.recommendation.mind import Impression, NewsItem, clean_text, format_time, write_split

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Event:
    """One rating: ``user`` rated ``item`` with ``rating`` at ``time`` (unix seconds)."""

    user: str
    item: str
    time: int
    rating: float


@dataclass
class Options:
    """Conversion options (see the module docstring)."""

    negatives: int = 4
    seed: int = 42
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cutoffs: tuple[int, int] | None = None
    max_clicks: int = 5
    max_history: int = 50
    min_rating: float = 4.0

    def check(self) -> None:
        if self.negatives < 1:
            raise ConfigError(f"negatives must be >= 1, got {self.negatives}")
        if self.max_clicks < 1:
            raise ConfigError(f"max_clicks must be >= 1, got {self.max_clicks}")
        if self.max_history < 0:
            raise ConfigError(f"max_history must be >= 0 (0: the whole history), got {self.max_history}")
        f = self.fractions
        if len(f) != 3 or min(f) <= 0 or not math.isclose(sum(f), 1.0, abs_tol=1e-6):
            raise ConfigError(f"split fractions must be 3 positive numbers summing to 1, got {list(f)}")
        if self.cutoffs is not None and not self.cutoffs[0] < self.cutoffs[1]:
            raise ConfigError(f"cut-offs must be increasing, got {list(self.cutoffs)}")


@dataclass
class Conversion:
    """The converted splits (news rows and impressions per split) and their statistics."""

    splits: dict[str, tuple[list[NewsItem], list[Impression]]]
    stats: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> Path:
        from experiments import reporting

        out_dir = Path(out_dir)
        for name, (news, impressions) in self.splits.items():
            write_split(out_dir / name, news, impressions)
        reporting.write_json(out_dir / "conversion.json", self.stats)
        return out_dir


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def dedupe(events: Iterable[Event]) -> list[Event]:
    """Events sorted by (time, user, item); a repeated (user, item) keeps its first event only."""
    out, seen = [], set()
    for e in sorted(events, key=lambda e: (e.time, e.user, e.item, -e.rating)):
        if (e.user, e.item) not in seen:
            seen.add((e.user, e.item))
            out.append(e)
    return out


def time_cutoffs(click_times: Sequence[int], fractions: Sequence[float]) -> tuple[int, int]:
    """(t1, t2): the click timestamps at the ``fractions[0]`` and ``fractions[0] + fractions[1]`` quantiles."""
    times = sorted(click_times)
    if not times:
        raise ConfigError("no clicks: nothing to split (is min_rating too high?)")
    n = len(times)
    t1 = times[min(n - 1, int(fractions[0] * n))]
    t2 = times[min(n - 1, int((fractions[0] + fractions[1]) * n))]
    return t1, t2


def event_cutoffs(events: Sequence[Event], options: Options) -> tuple[int, int]:
    """The options' cut-offs, or the quantile ones of the clicks among ``events``."""
    if options.cutoffs is not None:
        return options.cutoffs
    return time_cutoffs([e.time for e in events if e.rating >= options.min_rating], options.fractions)


def _period(t: int, cutoffs: tuple[int, int]) -> int:
    return 0 if t < cutoffs[0] else (1 if t < cutoffs[1] else 2)


def _sample_negatives(rng: np.random.Generator, pool: Sequence[str], available: int, exclude: set[str],
                      n: int) -> list[str]:
    """``n`` distinct items of ``pool[:available]`` not in ``exclude`` (fewer when fewer exist)."""
    chosen: list[str] = []
    seen: set[str] = set()
    if available:
        for i in rng.integers(available, size=4 * n + 8):
            item = pool[int(i)]
            if item not in exclude and item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == n:
                    return chosen
    rest = [it for it in pool[:available] if it not in exclude and it not in seen]
    k = min(n - len(chosen), len(rest))
    if k:
        chosen += [rest[int(i)] for i in rng.choice(len(rest), size=k, replace=False)]
    return chosen


def build_mind(events: Iterable[Event], items: dict[str, NewsItem], options: Options | None = None,
               cutoffs: tuple[int, int] | None = None) -> Conversion:
    """MIND splits from rating events (see the module docstring for the rules).

    Args:
        events: every rating (all values: low ratings make items "seen" for negative sampling).
        items: news rows by item id; an item without one gets its id as title.
        options: conversion options.
        cutoffs: (t1, t2); default: ``options.cutoffs`` or the click-time quantiles.

    Raises:
        ConfigError: bad options, or a split without impressions (choose other cut-offs).
    """
    options = options or Options()
    options.check()
    events = dedupe(events)
    cutoffs = cutoffs or event_cutoffs(events, options)
    first_seen: dict[str, int] = {}
    for e in events:
        first_seen.setdefault(e.item, e.time)
    pool = sorted(first_seen, key=lambda it: (first_seen[it], it))
    pool_times = [first_seen[it] for it in pool]
    clicks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e in events:
        if e.rating >= options.min_rating:
            clicks[e.user].append((e.time, e.item))

    rows: dict[int, list[tuple[tuple, Impression]]] = {0: [], 1: [], 2: []}
    dropped = 0
    for user in sorted(clicks):
        user_clicks = clicks[user]  # time order (events are sorted)
        times = [t for t, _ in user_clicks]
        clicked = {it for _, it in user_clicks}
        by_period: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for t, it in user_clicks:
            by_period[_period(t, cutoffs)].append((t, it))
        for period, period_clicks in sorted(by_period.items()):
            for g in range(0, len(period_clicks), options.max_clicks):
                group = period_clicks[g: g + options.max_clicks]
                t0 = group[0][0]
                history = [it for _, it in user_clicks[: bisect.bisect_left(times, t0)]]
                if options.max_history:
                    history = history[-options.max_history:]
                rng = np.random.default_rng([options.seed, zlib.crc32(user.encode()), period, g])
                positives = [it for _, it in group]
                negatives = _sample_negatives(rng, pool, bisect.bisect_right(pool_times, t0), clicked,
                                              options.negatives * len(positives))
                if not negatives:
                    dropped += 1
                    continue
                candidates = positives + negatives
                labels = [1] * len(positives) + [0] * len(negatives)
                perm = rng.permutation(len(candidates))
                imp = Impression("", user, format_time(t0), history, [candidates[i] for i in perm],
                                 [labels[i] for i in perm])
                rows[period].append(((t0, user, g), imp))

    splits: dict[str, tuple[list[NewsItem], list[Impression]]] = {}
    stats: dict[str, Any] = {
        "options": {**options.__dict__, "fractions": list(options.fractions),
                    "cutoffs": list(options.cutoffs) if options.cutoffs else None},
        "cutoffs": {"train_before": cutoffs[0], "test_from": cutoffs[1],
                    "train_before_utc": _iso(cutoffs[0]), "test_from_utc": _iso(cutoffs[1])},
        "events": len(events),
        "clicks": sum(len(c) for c in clicks.values()),
        "users": len(clicks),
        "dropped_no_negative": dropped,
    }
    for period, name in enumerate(SPLITS):
        ordered = [imp for _, imp in sorted(rows[period], key=lambda r: r[0])]
        if not ordered:
            raise ConfigError(
                f"the {name} split has no impressions with cut-offs {_iso(cutoffs[0])} / {_iso(cutoffs[1])}; "
                "choose other --split fractions or --cutoffs"
            )
        for i, imp in enumerate(ordered, start=1):
            imp.impression_id = str(i)
        used = sorted({n for imp in ordered for n in (*imp.history, *imp.candidates)})
        news = [items.get(n) or NewsItem(n, title=n) for n in used]
        splits[name] = (news, ordered)
        n_clicks = sum(sum(imp.labels) for imp in ordered)
        stats[name] = {
            "impressions": len(ordered),
            "users": len({imp.user_id for imp in ordered}),
            "clicks": n_clicks,
            "candidates": sum(len(imp.candidates) for imp in ordered),
            "news": len(news),
            "empty_history": sum(1 for imp in ordered if not imp.history),
            "first_impression": ordered[0].time,
            "last_impression": ordered[-1].time,
        }
    return Conversion(splits, stats)


# ---- MovieLens ------------------------------------------------------------------------------------------
def _csv_rows(path: Path, columns: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header holding ``columns``."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataError(path, None, f"file not found; expected a CSV with columns {', '.join(columns)}") from None
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, 1, f"header lacks column(s) {', '.join(missing)}; expected {', '.join(columns)}")
        for row in reader:
            yield reader.line_num, row


def read_movielens(folder: str | Path) -> tuple[list[Event], dict[str, dict[str, Any]]]:
    """MovieLens ratings as events (users ``U<userId>``, items ``M<movieId>``) and per-movie metadata
    ``{item: {"title", "genres", "tags": [(time, tag), ...]}}`` from movies.csv, ratings.csv and tags.csv.

    Raises:
        DataError: a missing file or column, or a row whose numbers do not parse.
    """
    folder = Path(folder)
    meta: dict[str, dict[str, Any]] = {}
    path = folder / "movies.csv"
    for _line, row in _csv_rows(path, ("movieId", "title", "genres")):
        genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
        meta[f"M{row['movieId'].strip()}"] = {"title": row["title"], "genres": genres, "tags": []}
    events = []
    path = folder / "ratings.csv"
    for line, row in _csv_rows(path, ("userId", "movieId", "rating", "timestamp")):
        try:
            events.append(Event(f"U{row['userId'].strip()}", f"M{row['movieId'].strip()}",
                                int(row["timestamp"]), float(row["rating"])))
        except (TypeError, ValueError):
            raise DataError(path, line, "rating and timestamp must be numbers") from None
    path = folder / "tags.csv"
    if path.exists():
        for line, row in _csv_rows(path, ("userId", "movieId", "tag", "timestamp")):
            item = f"M{row['movieId'].strip()}"
            try:
                t = int(row["timestamp"])
            except (TypeError, ValueError):
                raise DataError(path, line, "timestamp must be a number") from None
            if item in meta and row["tag"].strip():
                meta[item]["tags"].append((t, row["tag"]))
    return events, meta


def movielens_items(meta: dict[str, dict[str, Any]], before: int, max_tags: int = 20) -> dict[str, NewsItem]:
    """News rows: title; category = first genre; abstract = genres and the tags written before ``before``."""
    items = {}
    for item, m in meta.items():
        tags: list[str] = []
        for when, tag in sorted(m["tags"], key=lambda x: x[0]):
            tag = clean_text(tag)
            if when < before and tag.lower() not in {t.lower() for t in tags} and len(tags) < max_tags:
                tags.append(tag)
        parts = []
        if m["genres"]:
            parts.append("Genres: " + ", ".join(m["genres"]) + ".")
        if tags:
            parts.append("Tags: " + ", ".join(tags) + ".")
        items[item] = NewsItem(item, category=(m["genres"][0].lower() if m["genres"] else ""),
                               title=clean_text(m["title"]), abstract=" ".join(parts))
    return items


def convert_movielens(folder: str | Path, options: Options | None = None) -> Conversion:
    """MovieLens folder (movies.csv, ratings.csv, tags.csv) -> :class:`Conversion`."""
    options = options or Options()
    events, meta = read_movielens(folder)
    cutoffs = event_cutoffs(dedupe(events), options)
    conv = build_mind(events, movielens_items(meta, before=cutoffs[0]), options, cutoffs)
    conv.stats["source"] = {"kind": "movielens", "path": str(Path(folder).resolve())}
    return conv


# ---- Amazon reviews -------------------------------------------------------------------------------------
def read_json_objects(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for JSON objects written one after another (pretty-printed or JSON Lines).

    Raises:
        DataError: a missing file, or text that is not a sequence of JSON objects (with its line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, None, "file not found; expected Amazon review JSON objects") from None
    decoder = json.JSONDecoder()
    out, pos, n = [], 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(path, err.lineno, f"invalid JSON: {err.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(path, line, f"expected a JSON object, got {type(obj).__name__}")
        out.append((line, obj))
    return out


def read_amazon(path: str | Path) -> tuple[list[Event], dict[str, list[tuple[int, str, str]]]]:
    """Amazon reviews as events (``reviewerID``, ``asin``, ``unixReviewTime``, ``overall``) and the reviews
    of each item, ``{asin: [(time, summary, reviewText), ...]}``.

    Raises:
        DataError: bad JSON, or a review without one of those four fields.
    """
    events, reviews = [], defaultdict(list)
    for line, obj in read_json_objects(path):
        try:
            user, item = str(obj["reviewerID"]).strip(), str(obj["asin"]).strip()
            t, rating = int(obj["unixReviewTime"]), float(obj["overall"])
        except KeyError as err:
            raise DataError(path, line, f"review lacks the field {err.args[0]!r}") from None
        except (TypeError, ValueError):
            raise DataError(path, line, "unixReviewTime and overall must be numbers") from None
        if not user or not item or "-" in item:
            raise DataError(path, line, f"bad reviewerID/asin {user!r}/{item!r} (empty, or asin with '-')")
        events.append(Event(user, item, t, rating))
        reviews[item].append((t, clean_text(obj.get("summary") or ""), clean_text(obj.get("reviewText") or "")))
    return events, dict(reviews)


def amazon_items(reviews: dict[str, list[tuple[int, str, str]]], before: int, max_reviews: int = 5,
                 max_chars: int = 300) -> tuple[dict[str, NewsItem], int]:
    """News rows from reviews written before ``before``: title = distinct summaries, abstract = texts (each
    cut to ``max_chars``), the earliest ``max_reviews``. Returns the rows and how many items had no review
    before ``before`` (their earliest reviews are used)."""
    items, late = {}, 0
    for item, rows in reviews.items():
        rows = sorted(rows)
        early = [r for r in rows if r[0] < before]
        if not early:
            late += 1
        chosen = (early or rows)[:max_reviews]
        summaries: list[str] = []
        for _, s, _text in chosen:
            if s and s not in summaries:
                summaries.append(s)
        texts = [t[:max_chars] for _, _s, t in chosen if t]
        items[item] = NewsItem(item, category="fashion", title="; ".join(summaries), abstract=" ".join(texts))
    return items, late


def convert_amazon(path: str | Path, options: Options | None = None, max_reviews: int = 5) -> Conversion:
    """Amazon review file (concatenated JSON objects) -> :class:`Conversion`."""
    options = options or Options()
    events, reviews = read_amazon(path)
    cutoffs = event_cutoffs(dedupe(events), options)
    items, late = amazon_items(reviews, before=cutoffs[0], max_reviews=max_reviews)
    conv = build_mind(events, items, options, cutoffs)
    conv.stats["source"] = {"kind": "amazon", "path": str(Path(path).resolve())}
    conv.stats["items_text_after_cutoff"] = late
    return conv


# ---- command line ---------------------------------------------------------------------------------------
DEFAULT_OUT = {"movielens": "outputs/data/movielens_mind", "amazon": "outputs/data/amazon_fashion_mind"}


def _time_arg(text: str) -> int:
    """Unix seconds, or an ISO date/time (UTC when no zone is given)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected unix seconds or an ISO date (2016-01-01)") from None
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tasks.recommendation.convert",
        description="Convert MovieLens or Amazon reviews into MIND-format train/ dev/ test/ folders.",
    )
    parser.add_argument("source", choices=sorted(DEFAULT_OUT))
    parser.add_argument("input", help="MovieLens folder (movies.csv, ratings.csv, tags.csv) or Amazon .json file")
    parser.add_argument("out", nargs="?", help="output folder (default: outputs/data/<source>_mind)")
    parser.add_argument("--negatives", type=int, default=4, help="non-clicked candidates per click (K)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "DEV", "TEST"),
                        help="click-time quantiles of the cut-offs (default 0.8 0.1 0.1)")
    parser.add_argument("--cutoffs", type=_time_arg, nargs=2, metavar=("T1", "T2"),
                        help="explicit cut-offs (unix seconds or ISO dates): train < T1 <= dev < T2 <= test")
    parser.add_argument("--max-clicks", type=int, default=5, help="clicks per impression at most")
    parser.add_argument("--max-history", type=int, default=50, help="history length kept (0: all)")
    parser.add_argument("--min-rating", type=float, default=4.0, help="ratings >= this are clicks")
    parser.add_argument("--max-reviews", type=int, default=5, help="amazon: reviews per item text")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(negatives=args.negatives, seed=args.seed, fractions=tuple(args.split),
                      cutoffs=tuple(args.cutoffs) if args.cutoffs else None, max_clicks=args.max_clicks,
                      max_history=args.max_history, min_rating=args.min_rating)
    try:
        if args.source == "movielens":
            conv = convert_movielens(args.input, options)
        else:
            conv = convert_amazon(args.input, options, max_reviews=args.max_reviews)
        out = conv.write(args.out or DEFAULT_OUT[args.source])
    except ExperimentsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    s = conv.stats
    print(f"{args.source}: {s['events']} ratings, {s['clicks']} clicks, {s['users']} users; "
          f"cut-offs {s['cutoffs']['train_before_utc']} / {s['cutoffs']['test_from_utc']}")
    for name in SPLITS:
        r = s[name]
        print(f"  {name:5} {r['impressions']:6} impressions {r['clicks']:7} clicks {r['candidates']:8} candidates "
              f"{r['news']:6} news  ({r['first_impression']} .. {r['last_impression']})")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
