"""Read and write the MIND format (Wu et al. 2020, "MIND: A Large-scale Dataset for News Recommendation").

A split is a folder with two tab-separated files, no header, no quoting:

* ``news.tsv``: news_id, category, subcategory, title, abstract, url, title_entities, abstract_entities.
  Trailing columns may be missing (at least news_id, category, subcategory and title).
* ``behaviors.tsv``: impression_id, user_id, time, history, impressions. ``history`` is the user's
  earlier clicks, space-separated news ids, oldest first, possibly empty. ``impressions`` lists the
  candidates shown, ``N123-1`` (clicked) or ``N123-0`` (not clicked); an unlabelled file (MIND's test
  split) lists bare ids ``N123``. A file is labelled or unlabelled throughout.

Every problem is a :class:`~experiments.errors.DataError` naming the file and line: a duplicated news id,
a history or candidate id absent from the split's news.tsv, a malformed impression token, a wrong
column count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from experiments.errors import DataError
from experiments.tasks.io import read_input_bytes

NEWS_COLUMNS = (
    "news_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities",
)
BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
MIN_NEWS_COLUMNS = 4
TEXT_FIELDS = ("category", "subcategory", "title", "abstract")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


@dataclass(frozen=True)
class NewsItem:
    """One row of news.tsv (missing trailing columns are empty strings)."""

    news_id: str
    category: str = ""
    subcategory: str = ""
    title: str = ""
    abstract: str = ""
    url: str = ""
    title_entities: str = ""
    abstract_entities: str = ""

    def text(self, fields: Iterable[str] = ("title",)) -> str:
        """The non-empty ``fields`` joined by ". " (the item text the encoder reads)."""
        return ". ".join(v for f in fields if (v := getattr(self, f).strip()))


@dataclass
class Impression:
    """One row of behaviors.tsv. ``labels`` is None in an unlabelled file; ``line`` is 1-based."""

    impression_id: str
    user_id: str
    time: str
    history: list[str]
    candidates: list[str]
    labels: list[int] | None = None
    line: int = 0

    @property
    def positives(self) -> list[str]:
        return [c for c, y in zip(self.candidates, self.labels or [], strict=False) if y == 1]

    @property
    def negatives(self) -> list[str]:
        return [c for c, y in zip(self.candidates, self.labels or [], strict=False) if y == 0]


@dataclass
class MindSplit:
    """A split read from disk: its news (by id) and impressions (file order)."""

    news: dict[str, NewsItem]
    impressions: list[Impression]
    behaviors_file: Path
    news_file: Path
    labelled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = bool(self.impressions) and self.impressions[0].labels is not None


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for every non-blank line of a UTF-8 file."""
    data = read_input_bytes(path, f"MIND {what}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(path, data[: err.start].count(b"\n") + 1, "not UTF-8 text") from None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def read_news(path: str | Path) -> dict[str, NewsItem]:
    """news.tsv as ``{news_id: NewsItem}`` in file order.

    Raises:
        DataError: missing file, fewer than 4 or more than 8 columns, empty or duplicated news id.
    """
    path = Path(path)
    news: dict[str, NewsItem] = {}
    first_line: dict[str, int] = {}
    for number, line in _lines(path, "news.tsv (news_id, category, subcategory, title, abstract, ...)"):
        cols = line.split("\t")
        if not MIN_NEWS_COLUMNS <= len(cols) <= len(NEWS_COLUMNS):
            raise DataError(
                path, number,
                f"{len(cols)} tab-separated columns; expected {MIN_NEWS_COLUMNS} to {len(NEWS_COLUMNS)}: "
                + ", ".join(NEWS_COLUMNS),
            )
        news_id = cols[0].strip()
        if not news_id:
            raise DataError(path, number, "empty news id in the first column")
        if news_id in news:
            raise DataError(path, number, f"duplicated news id {news_id!r} (first on line {first_line[news_id]})")
        first_line[news_id] = number
        news[news_id] = NewsItem(news_id, *(c.strip() for c in cols[1:]))
    if not news:
        raise DataError(path, None, "no news; expected one tab-separated row per news item")
    return news


def parse_token(token: str) -> tuple[str, int | None]:
    """``"N12-1"`` -> ("N12", 1); ``"N12"`` -> ("N12", None). Raises ValueError when malformed."""
    if "-" not in token:
        return token, None
    news_id, _, label = token.rpartition("-")
    if not news_id or label not in ("0", "1"):
        raise ValueError(f"malformed impression token {token!r}; expected <news_id>-1, <news_id>-0 or <news_id>")
    return news_id, int(label)


def read_behaviors(path: str | Path, news: Mapping[str, object] | None = None,
                   news_file: str | Path | None = None) -> list[Impression]:
    """behaviors.tsv as impressions in file order, checked against ``news`` when given.

    Raises:
        DataError: missing file, not 5 columns, empty or duplicated impression id, a malformed
            impression token, labelled and unlabelled tokens mixed, no candidate, or a history or
            candidate id absent from ``news`` (whose file ``news_file`` the message names).
    """
    path = Path(path)
    where = f" ({news_file})" if news_file else ""
    impressions: list[Impression] = []
    seen: dict[str, int] = {}
    labelled: bool | None = None
    for number, line in _lines(path, "behaviors.tsv (impression_id, user_id, time, history, impressions)"):
        cols = line.split("\t")
        if len(cols) != len(BEHAVIOR_COLUMNS):
            raise DataError(path, number, f"{len(cols)} tab-separated columns; expected 5: "
                            + ", ".join(BEHAVIOR_COLUMNS))
        imp_id, user, time, history_col, impressions_col = (c.strip() for c in cols)
        if not imp_id:
            raise DataError(path, number, "empty impression id in the first column")
        if imp_id in seen:
            raise DataError(path, number, f"duplicated impression id {imp_id!r} (first on line {seen[imp_id]})")
        seen[imp_id] = number
        history = history_col.split()
        candidates, labels = [], []
        for token in impressions_col.split():
            try:
                news_id, label = parse_token(token)
            except ValueError as err:
                raise DataError(path, number, str(err)) from None
            if labelled is None:
                labelled = label is not None
            if labelled != (label is not None):
                raise DataError(path, number, f"impression token {token!r}: the file mixes labelled "
                                "(<news_id>-0/1) and unlabelled (<news_id>) candidates")
            candidates.append(news_id)
            labels.append(label)
        if not candidates:
            raise DataError(path, number, "no candidates in the impressions column")
        if news is not None:
            for kind, ids in (("history", history), ("impression", candidates)):
                missing = [i for i in ids if i not in news]
                if missing:
                    raise DataError(path, number, f"{kind} news id {missing[0]!r} is not in news.tsv{where}")
        impressions.append(Impression(imp_id, user, time, history, candidates,
                                      labels if labelled else None, number))
    if not impressions:
        raise DataError(path, None, "no impressions; expected one tab-separated row per impression")
    return impressions


def split_files(path: str | Path) -> tuple[Path, Path]:
    """(behaviors.tsv, news.tsv) of a split given its folder or its behaviors file."""
    path = Path(path)
    behaviors = path / "behaviors.tsv" if path.is_dir() else path
    return behaviors, behaviors.with_name("news.tsv")


def read_split(path: str | Path, news_file: str | Path | None = None) -> MindSplit:
    """A split from its folder or behaviors.tsv; news from ``news_file`` or news.tsv next to it."""
    behaviors, sibling = split_files(path)
    news_path = Path(news_file) if news_file else sibling
    news = read_news(news_path)
    return MindSplit(news, read_behaviors(behaviors, news, news_path), behaviors, news_path)


def news_line(item: NewsItem) -> str:
    cols = [getattr(item, c) for c in NEWS_COLUMNS]
    for c in cols:
        if "\t" in c or "\n" in c:
            raise ValueError(f"news {item.news_id}: a field holds a tab or newline")
    return "\t".join(cols)


def behaviors_line(imp: Impression) -> str:
    if imp.labels is None:
        tokens = imp.candidates
    else:
        tokens = [f"{c}-{y}" for c, y in zip(imp.candidates, imp.labels, strict=True)]
    return "\t".join([imp.impression_id, imp.user_id, imp.time, " ".join(imp.history), " ".join(tokens)])


def write_split(folder: str | Path, news: Iterable[NewsItem], impressions: Iterable[Impression]) -> Path:
    """Write ``folder/news.tsv`` and ``folder/behaviors.tsv`` (atomically, UTF-8)."""
    from experiments import reporting

    folder = Path(folder)
    reporting.write_text(folder / "news.tsv", "".join(news_line(n) + "\n" for n in news))
    reporting.write_text(folder / "behaviors.tsv", "".join(behaviors_line(i) + "\n" for i in impressions))
    return folder


def clean_text(text: str) -> str:
    """One line of text: tabs, newlines and runs of spaces become single spaces."""
    return " ".join(str(text).split())


def format_time(unix_seconds: float) -> str:
    """MIND's time format in UTC, e.g. ``11/15/2019 8:55:22 AM`` (no zero padding of month/day/hour)."""
    t = datetime.fromtimestamp(unix_seconds, tz=UTC)
    hour = t.hour % 12 or 12
    return f"{t.month}/{t.day}/{t.year} {hour}:{t.minute:02d}:{t.second:02d} {'AM' if t.hour < 12 else 'PM'}"


def parse_time(text: str) -> int:
    """Unix seconds of a MIND time string read as UTC (inverse of :func:`format_time`)."""
    return int(datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC).timestamp())
