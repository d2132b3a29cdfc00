"""POST /recommend behind the route: resolve the request, dispatch to its ranker, fall back, build the response.

When a ranker cannot rank a query (`CannotRank`: the engine timed out or failed, or sasrec knows no item of the
history), the fallback ranker (`REASONREC_FALLBACK_RANKER`, SASRec by default; `popular` when that has no usable
checkpoint or cannot rank the query either) answers instead; the response says so in `fallback` and
`reasonrec_fallback_total{reason}` counts it. Stage timings of every attempt are kept.
"""

from __future__ import annotations

import time

from indexer.store import ItemStore
from service.errors import ApiError, CannotRank
from service.history import resolve_history
from service.rankers import LAST_RESORT_RANKER, Ranked, RankQuery
from service.schemas import Conclusion, ModelInfo, RecommendRequest, RecommendResponse, RecommendTimings, ScoredItem
from service.settings import Settings
from service.state import AppState


def reasoning_budget(asked: int | None, settings: Settings) -> int:
    if asked is None:
        return settings.default_reasoning_tokens
    if asked > settings.max_reasoning_tokens:
        raise ApiError(
            422, f"max_reasoning_tokens: {asked} is over this server's cap of {settings.max_reasoning_tokens} "
            "(REASONREC_MAX_REASONING_TOKENS)", param="max_reasoning_tokens",
        )
    return asked


def ranker_name(body: RecommendRequest, settings: Settings) -> str:
    return body.ranker.value if body.ranker is not None else settings.default_ranker


def build_query(body: RecommendRequest, store: ItemStore, settings: Settings) -> RankQuery:
    history = resolve_history(body.history, store.catalog)
    return RankQuery(
        history=history,
        exclude=history.known_ids if body.exclude_history else frozenset(),
        k=body.k,
        reasoning_tokens=reasoning_budget(body.max_reasoning_tokens, settings),
    )


async def rank_with_fallback(
    state: AppState, name: str, query: RankQuery, timings_ms: dict[str, float]
) -> tuple[str, Ranked, str | None]:
    """(name of the ranker that answered, its answer, fallback reason or None).

    The chain is the requested ranker, the fallback ranker, then `popular`: a ranker that cannot rank the query
    (`CannotRank`: the engine timed out or failed, sasrec knows no history item) hands it on, and so does a
    fallback ranker that is not available (503, e.g. sasrec without a usable checkpoint). The reason is the
    first one given."""
    chain = list(dict.fromkeys((name, state.settings.fallback_ranker, LAST_RESORT_RANKER)))
    reason: str | None = None
    for position, ranker in enumerate(chain):
        last = position == len(chain) - 1
        try:
            return ranker, await state.rankers[ranker].rank(query, timings_ms), reason
        except CannotRank as cannot:
            if last:
                raise
            if reason is None:
                reason = cannot.reason
                state.metrics.fallback_total.labels(reason).inc()
        except ApiError as unavailable:
            if position == 0 or unavailable.status != 503 or last:
                raise
    raise AssertionError("unreachable: the last ranker of the chain answers or raises")


async def recommend(state: AppState, store: ItemStore, body: RecommendRequest) -> RecommendResponse:
    start = time.perf_counter()
    query = build_query(body, store, state.settings)
    index_version = store.manifest.version
    timings: dict[str, float] = {}
    answered_by, ranked, fallback = await rank_with_fallback(state, ranker_name(body, state.settings), query, timings)
    catalog = store.catalog
    items = [
        ScoredItem(item_id=item_id, title=catalog[item_id].title, score=score)
        for item_id, score in ranked.items
        if item_id in catalog  # an item removed while this request ran is left out
    ]
    return RecommendResponse(
        items=items, reasoning=ranked.reasoning, ranker=answered_by, cached=ranked.cached, fallback=fallback,
        notes=list(ranked.notes),
        conclusion=Conclusion(genre=ranked.conclusion.genre, decade=ranked.conclusion.decade)
        if ranked.conclusion else None,
        model=ModelInfo.of(state.engine.fingerprint, state.engine.reasoning_adapter), index_version=index_version,
        timings_ms=RecommendTimings(**timings, total=(time.perf_counter() - start) * 1000.0),
    )
