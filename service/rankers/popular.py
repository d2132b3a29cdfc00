"""The popularity ranker: items by catalog `rating_count`, most rated first, ties by item id.

No engine, about a millisecond: the default fallback ("production") ranker until SASRec takes that role.
The score is the rating count. The ordering is computed once per catalog version (a write replaces the
catalog object, which invalidates it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from indexer.catalog import Catalog
from service.rankers.base import RankQuery, Ranked

if TYPE_CHECKING:
    from service.state import AppState


class PopularRanker:
    uses_engine: ClassVar[bool] = False

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._ordered: tuple[Catalog, list[tuple[str, float]]] | None = None

    def ordering(self, catalog: Catalog) -> list[tuple[str, float]]:
        if self._ordered is None or self._ordered[0] is not catalog:
            items = sorted(catalog, key=lambda item: (-item.rating_count, item.item_id))
            self._ordered = (catalog, [(item.item_id, float(item.rating_count)) for item in items])
        return self._ordered[1]

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        with self.state.metrics.stage("search", timings_ms):
            ordered = self.ordering(self.state.ready_store().catalog)
            top: list[tuple[str, float]] = []
            for item_id, score in ordered:
                if item_id not in query.exclude:
                    top.append((item_id, score))
                    if len(top) == query.k:
                        break
        return Ranked(top)
