"""What every served ranker receives and returns, and the interface the dispatch (`service.recommend`) calls.

A served ranker wraps a ranker core of `model.rankers` (the same class the evaluation harness measures) with
what serving needs: the app's current catalog and index, caching and deadlines (`service.rankers.llm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from model.prompts import UserHistory

if TYPE_CHECKING:
    from service.state import AppState


@dataclass(frozen=True)
class RankQuery:
    """A validated /recommend request, resolved against the catalog."""

    history: UserHistory
    exclude: frozenset[str]
    """Item ids that must not be returned."""
    k: int
    reasoning_tokens: int


class CannotRank(Exception):
    """This ranker cannot rank this query (e.g. sasrec knows no item of the history, or the engine failed); the
    next ranker of the fallback chain answers and the response's `fallback` says `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ranked:
    items: list[tuple[str, float]]
    """(item id, score), best first."""
    reasoning: str | None = None
    cached: bool = False
    notes: tuple[str, ...] = ()
    """What the client should know about this ranking (e.g. items the ranker cannot score)."""


class Ranker(Protocol):
    """One ranker per app, built by its class from the app state. `uses_engine`: may time out or fail (the
    fallback ranker must not)."""

    uses_engine: ClassVar[bool]

    def __init__(self, state: AppState) -> None: ...

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        """Rank for `query`; add per-stage milliseconds to `timings_ms`; raise `CannotRank` (e.g. `EngineFailure`
        when the engine timed out or failed) to hand the query to the fallback ranker."""
        ...
