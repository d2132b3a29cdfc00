"""What every served ranker receives and returns, and the interface the dispatch (`service.recommend`) calls.

A served ranker wraps a ranker core of `model.rankers` (the same class the evaluation harness measures) with
what serving needs: the app's current catalog and index (`StoreGetter`), metrics, caching and deadlines
(`service.rankers.llm`). Each is built with what it uses (`service.rankers.build_rankers`), never the app state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from indexer.store import ItemStore
from model.claims import Prediction
from model.prompts import UserHistory

StoreGetter = Callable[[], ItemStore]
"""The item store the app serves now, or a 503 naming why there is none (`AppState.ready_store`)."""


@dataclass(frozen=True)
class RankQuery:
    """A validated /recommend request, resolved against the catalog."""

    history: UserHistory
    exclude: frozenset[str]
    """Item ids that must not be returned."""
    k: int
    reasoning_tokens: int


@dataclass(frozen=True)
class Ranked:
    items: list[tuple[str, float]]
    """(item id, score), best first."""
    reasoning: str | None = None
    cached: bool = False
    notes: tuple[str, ...] = ()
    conclusion: Prediction | None = None
    """What the reasoning concluded (the conclusion term reads it)."""
    """What the client should know about this ranking (e.g. items the ranker cannot score)."""


class Ranker(Protocol):
    """One ranker per app (`service.rankers.build_rankers`). `uses_engine`: may time out or fail (the fallback
    ranker must not)."""

    uses_engine: ClassVar[bool]

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        """Rank for `query`; add per-stage milliseconds to `timings_ms`; raise `CannotRank` (e.g. `EngineFailure`
        when the engine timed out or failed) to hand the query to the fallback ranker."""
        ...
