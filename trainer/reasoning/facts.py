"""The facts of a history that a grounded rationale may state, each defined once, so that the generator
(`trainer.reasoning.rationales`) writes only what the checker (`trainer.reasoning.checker`) verifies.

The history is the prompt's window: the last `MAX_HISTORY_LINES` entries the user prompt shows
(`model.prompts.user_prompt`), each a catalog item and its rating. A genre's share is the share of the window's
items that carry the genre (an item may carry several); a decade's share the share of items released in it; the
user's mean is over the window's ratings, compared with the training split's global mean; "recent" is the last
`RECENT` entries, "earlier" the rest of the window; a favourite is an entry rated the window's highest rating, when
that is at least 4. Tolerances for numbers written in a text are here too (`SHARE_TOLERANCE` ...), so a text may
round. The reasoning follows R2ec ("Towards Large Recommender Models with Reasoning"): analysis first, then the
state at `<answer>`; the rationales here are its supervision, written by a program instead of a teacher model.
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
"""A recent shift is only stated (and only true) when the window holds at least this many earlier entries."""
SHARE_TOLERANCE = 10.0
"""Percentage points a written genre or decade share may be off (the window has <= 20 items: two items)."""
MEAN_TOLERANCE = 0.1
"""How far a written mean rating of the user may be off (written to one decimal)."""
GLOBAL_TOLERANCE = 0.051
"""How far the written global mean may be off (written to one decimal, so at most .05 plus float slack)."""
RATING_MARGIN = 0.2
"""The user rates "above" (or "below") the average when their mean differs from it by at least this; else "near"."""
SHIFT_MIN = 0.25
"""A genre gained "lately" when its share among recent entries exceeds its earlier share by at least this."""
ERA_SHIFT_YEARS = 10.0
"""Recent entries are "older" (or "newer") when their mean release year differs from the earlier ones' by this."""
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

    @property
    def earlier(self) -> tuple[Entry, ...]:
        return self.entries[:-RECENT]

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

    def decade_share(self, decade: int) -> float:
        return self.decade_counts[decade] / len(self.entries) if self.entries else 0.0

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

    @property
    def has_shift_window(self) -> bool:
        return len(self.earlier) >= MIN_EARLIER

    def genre_gain(self, genre: str) -> float:
        """Recent share minus earlier share of `genre` (0 without a long enough window)."""
        if not self.has_shift_window:
            return 0.0
        return self.genre_share(genre, self.recent) - self.genre_share(genre, self.earlier)

    def steady_genres(self) -> list[str]:
        """Genres that lead (ties included) both the recent and the earlier entries."""
        if not self.has_shift_window:
            return []
        earlier = set(leaders(self.genre_counts(self.earlier), 1))
        return [g for g in leaders(self.genre_counts(self.recent), 1) if g in earlier]

    @cached_property
    def era_shift(self) -> str | None:
        """"older" or "newer" when the recent entries' mean year differs from the earlier ones' by
        `ERA_SHIFT_YEARS` or more; else None."""
        if not self.has_shift_window:
            return None
        recent = [e.item.year for e in self.recent if e.item.year is not None]
        earlier = [e.item.year for e in self.earlier if e.item.year is not None]
        if not recent or not earlier:
            return None
        diff = sum(recent) / len(recent) - sum(earlier) / len(earlier)
        return "newer" if diff >= ERA_SHIFT_YEARS else "older" if diff <= -ERA_SHIFT_YEARS else None

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
