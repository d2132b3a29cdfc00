"""The facts of a history that a grounded rationale may state, each defined once, so that the generator
(`trainer.reasoning.rationales`) writes only what the checker (`trainer.reasoning.checker`) verifies.

The history is the prompt's window: the last `MAX_HISTORY_LINES` entries the user prompt shows
(`model.prompts.user_prompt`: title with year, genres, rating), each a catalog item and its rating. Every fact is
one a reader of those lines can see without arithmetic: the dominant genres (the most frequent among the window's
items; an item may carry several) and decades, whether the user's ratings run above or below the training split's
global mean, the genre the last `RECENT` entries lean to, and the favourites (entries rated the window's highest
rating, when that is at least 4). No shares or means are stated: a 135M model trained on such numbers wrote the
pool's most frequent ones whatever the history (docs/results/ml-1m-reasoning.md, template v2). The reasoning follows
R2ec ("Towards Large Recommender Models with Reasoning"): analysis first, then the state at `<answer>`; the
rationales here are its supervision, written by a program instead of a teacher model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from indexer.catalog import Catalog, Item
from model.prompts import MAX_HISTORY_LINES

RECENT = 5
"""Entries at the end of the window that count as "recent"."""
MIN_EARLIER = 5
"""What the recent entries lean to is only stated (and only true) when the window holds at least this many entries
before them, so "lately" says something the whole window does not."""
RATING_MARGIN = 0.2
"""The user rates "above" (or "below") the average when their mean differs from it by at least this; else "near"."""
TOP_GENRES = 3
"""A genre called dominant must be among this many most frequent (ties included)."""
TOP_DECADES = 2
"""A decade called dominant must be among this many most frequent (ties included)."""
MIN_FAVOURITE_RATING = 4.0


@dataclass(frozen=True)
class Entry:
    """One history line as facts see it: the catalog item and the user's rating (None when unrated)."""

    item: Item
    rating: float | None


def decade_of(year: int | None) -> int | None:
    """1994 -> 1990."""
    return None if year is None else year // 10 * 10


_ARTICLES = ("the", "a", "an")


def title_key(title: str) -> str:
    """A title reduced for matching: no year in parentheses, no leading or trailing article (MovieLens writes
    "Shawshank Redemption, The"), lowercase letters and digits only."""
    text = re.sub(r"\s*\(\d{4}\)\s*$", "", title.strip()).lower()
    text = re.sub(r",\s*(the|a|an)$", "", text)
    words = re.findall(r"[a-z0-9]+", text)
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def natural_title(title: str) -> str:
    """MovieLens's "Shawshank Redemption, The" as a reader writes it: "The Shawshank Redemption"."""
    match = re.fullmatch(r"(.*), (The|A|An)", title.strip())
    return f"{match.group(2)} {match.group(1)}" if match else title.strip()


def leaders(counts: Counter, n: int) -> list:
    """The keys among the `n` most frequent, ties with the n-th included, most frequent first."""
    ranked = sorted(((c, k) for k, c in counts.items() if c > 0), key=lambda pair: (-pair[0], str(pair[1])))
    if not ranked:
        return []
    floor = ranked[min(n, len(ranked)) - 1][0]
    return [k for c, k in ranked if c >= floor]


@dataclass(frozen=True)
class HistoryFacts:
    """What is true of one history window; `global_mean` is the training split's mean rating."""

    entries: tuple[Entry, ...]
    global_mean: float

    @classmethod
    def of(cls, entries: Iterable[Entry], global_mean: float) -> HistoryFacts:
        """The facts of the window the user prompt would show of `entries` (its last `MAX_HISTORY_LINES`)."""
        return cls(tuple(entries)[-MAX_HISTORY_LINES:], global_mean)

    @property
    def recent(self) -> tuple[Entry, ...]:
        return self.entries[-RECENT:]

    @staticmethod
    def genre_counts(entries: Sequence[Entry]) -> Counter:
        return Counter(g for e in entries for g in dict.fromkeys(e.item.genres))

    def genre_share(self, genre: str, entries: Sequence[Entry] | None = None) -> float:
        part = self.entries if entries is None else entries
        return self.genre_counts(part)[genre] / len(part) if part else 0.0

    @cached_property
    def top_genres(self) -> list[str]:
        return leaders(self.genre_counts(self.entries), TOP_GENRES)

    @cached_property
    def decade_counts(self) -> Counter:
        return Counter(d for e in self.entries if (d := decade_of(e.item.year)) is not None)

    @cached_property
    def top_decades(self) -> list[int]:
        return leaders(self.decade_counts, TOP_DECADES)

    @cached_property
    def mean_rating(self) -> float | None:
        ratings = [e.rating for e in self.entries if e.rating is not None]
        return sum(ratings) / len(ratings) if ratings else None

    @property
    def rating_direction(self) -> str | None:
        """"above", "below" or "near" the global mean (None without ratings)."""
        if self.mean_rating is None:
            return None
        diff = self.mean_rating - self.global_mean
        return "above" if diff >= RATING_MARGIN else "below" if diff <= -RATING_MARGIN else "near"

    @cached_property
    def recent_genres(self) -> list[str]:
        """The genres most frequent among the recent entries (ties included); none when fewer than `MIN_EARLIER`
        entries come before them."""
        if len(self.entries) - RECENT < MIN_EARLIER:
            return []
        return leaders(self.genre_counts(self.recent), 1)

    @cached_property
    def favourites(self) -> list[Entry]:
        """Entries rated the window's highest rating, when it is at least `MIN_FAVOURITE_RATING`; latest first."""
        rated = [e.rating for e in self.entries if e.rating is not None]
        if not rated or max(rated) < MIN_FAVOURITE_RATING:
            return []
        return [e for e in reversed(self.entries) if e.rating == max(rated)]

    def favourite_named(self, title: str) -> bool:
        key = title_key(title)
        return bool(key) and any(title_key(e.item.title) == key for e in self.favourites)


@dataclass(frozen=True)
class ReasoningContext:
    """What rationales and checks need beyond a history: the catalog and the training split's mean rating."""

    catalog: Catalog
    global_mean: float

    @cached_property
    def genres(self) -> dict[str, str]:
        """Every genre of the catalog by its lowercase name (texts are matched case-insensitively)."""
        return {g.lower(): g for item in self.catalog for g in item.genres}

    def facts(self, item_ids: Sequence[str], ratings: Sequence[float | None]) -> HistoryFacts:
        """The facts of a history given as catalog ids and ratings, oldest first."""
        return HistoryFacts.of((Entry(self.catalog[i], r) for i, r in zip(item_ids, ratings, strict=True)),
                               self.global_mean)


def global_mean_rating(train: dict[str, list]) -> float:
    """The mean rating of a split's training interactions (`trainer.data.splits.Split.train`)."""
    ratings = [x.rating for history in train.values() for x in history if x.rating is not None]
    if not ratings:
        raise ValueError("the training split has no ratings")
    return sum(ratings) / len(ratings)
