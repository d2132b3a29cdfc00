"""The facts of a history that a grounded rationale may state, each defined once, so that the generator
(`trainer.reasoning.rationales`) writes only what the checker (`trainer.reasoning.checker`) verifies.

The history is the prompt's window: the last `MAX_HISTORY_LINES` entries the user prompt shows
(`model.prompts.user_prompt`: rating, title with year, genres), each a catalog item and its rating. Every fact is one
a reader of those lines can see without arithmetic: the dominant genres (the most frequent among the window's items;
an item may carry several) and decades, the rating the user gives most often, and the genre the last `RECENT`
entries lean to. No shares or means are stated: a 135M model trained on such numbers wrote the pool's most frequent
ones whatever the history (docs/results/ml-1m-reasoning.md, template v2), and one trained to say whether the user
rates above the global mean wrote "above" nine times in ten (template v3). Favourites by title are not stated either:
on both line layouts the model named a title rated below the window's best, or one not in the window, in about three
claims of four (templates v3 and v4). The reasoning follows
R2ec ("Towards Large Recommender Models with Reasoning"): analysis first, then the state at `<answer>`; the
rationales here are its supervision, written by a program instead of a teacher model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from indexer.core.catalog import Catalog, Item
from model.claims import decade_of
from model.prompts import MAX_HISTORY_LINES

RECENT = 5
"""Entries at the end of the window that count as "recent"."""
MIN_EARLIER = 5
"""What the recent entries lean to is only stated (and only true) when the window holds at least this many entries
before them, so "lately" says something the whole window does not."""
TOP_GENRES = 3
"""A genre called dominant must be among this many most frequent (ties included)."""
TOP_DECADES = 2
"""A decade called dominant must be among this many most frequent (ties included)."""
TOP_RATINGS = 1
"""A rating called usual must be the window's most frequent (ties included): a looser rule would let a model that
always writes "4" be right in 83% of ML-1M windows (50% under this one)."""


@dataclass(frozen=True)
class Entry:
    """One history line as facts see it: the catalog item and the user's rating (None when unrated)."""

    item: Item
    rating: float | None


def leaders(counts: Counter, n: int) -> list:
    """The keys among the `n` most frequent, ties with the n-th included, most frequent first."""
    ranked = sorted(((c, k) for k, c in counts.items() if c > 0), key=lambda pair: (-pair[0], str(pair[1])))
    if not ranked:
        return []
    floor = ranked[min(n, len(ranked)) - 1][0]
    return [k for c, k in ranked if c >= floor]


@dataclass(frozen=True)
class HistoryFacts:
    """What is true of one history window."""

    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> HistoryFacts:
        """The facts of the window the user prompt would show of `entries` (its last `MAX_HISTORY_LINES`)."""
        return cls(tuple(entries)[-MAX_HISTORY_LINES:])

    @property
    def recent(self) -> tuple[Entry, ...]:
        return self.entries[-RECENT:]

    @staticmethod
    def genre_counts(entries: Sequence[Entry]) -> Counter:
        return Counter(g for e in entries for g in dict.fromkeys(e.item.genres))

    def genre_share(self, genre: str) -> float:
        """The share of the window's entries that carry `genre`."""
        return self.genre_counts(self.entries)[genre] / len(self.entries) if self.entries else 0.0

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
    def top_ratings(self) -> list[float]:
        """The ratings the user gives most often in the window (none when no entry is rated)."""
        return leaders(Counter(e.rating for e in self.entries if e.rating is not None), TOP_RATINGS)

    @cached_property
    def recent_genres(self) -> list[str]:
        """The genres most frequent among the recent entries (ties included); none when fewer than `MIN_EARLIER`
        entries come before them."""
        if len(self.entries) - RECENT < MIN_EARLIER:
            return []
        return leaders(self.genre_counts(self.recent), 1)


@dataclass(frozen=True)
class ReasoningContext:
    """What rationales and checks need beyond a history: the catalog."""

    catalog: Catalog

    @cached_property
    def genres(self) -> dict[str, str]:
        """Every genre of the catalog by its lowercase name (texts are matched case-insensitively)."""
        return {g.lower(): g for item in self.catalog for g in item.genres}

    def facts(self, item_ids: Sequence[str], ratings: Sequence[float | None]) -> HistoryFacts:
        """The facts of a history given as catalog ids and ratings, oldest first."""
        return HistoryFacts.of(Entry(self.catalog[i], r) for i, r in zip(item_ids, ratings, strict=True))

