"""POST /recommend behind the route: resolve the request, dispatch to its ranker, fall back, build the response.

When a ranker that uses the engine raises `EngineFailure` (deadline passed, or the engine raised), or a ranker
cannot rank for the history at all (`CannotRank`: e.g. SASRec knows none of its items), the fallback ranker
(`REASONREC_FALLBACK_RANKER`, SASRec by default; `popular` when that has no checkpoint or cannot rank either)
answers instead; the response says so in `fallback` and `reasonrec_fallback_total{reason}` counts it. Stage
timings of both attempts are kept.
"""

from __future__ import annotations

import time

from indexer.store import ItemStore
from service.engine_calls import EngineFailure
from service.errors import ApiError
from service.history import resolve_history
from service.rankers import LAST_RESORT_RANKER, CannotRank, Ranked, RankQuery
from service.schemas import ModelInfo, RecommendRequest, RecommendResponse, RecommendTimings, ScoredItem
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
    """(name of the ranker that answered, its answer, fallback reason or None)."""
    try:
        return name, await state.rankers[name].rank(query, timings_ms), None
    except EngineFailure as failure:
        reason = failure.reason
    except CannotRank:
        reason = "cannot_rank"
    state.metrics.fallback_total.labels(reason).inc()
    for fallback in dict.fromkeys((state.settings.fallback_ranker, LAST_RESORT_RANKER)):
        if fallback == name:
            continue
        try:
            return fallback, await state.rankers[fallback].rank(query, timings_ms), reason
        except CannotRank:
            continue
        except ApiError as unavailable:
            if unavailable.status != 503 or fallback == LAST_RESORT_RANKER:
                raise
    raise ApiError(503, f"no ranker can answer for this history (the {name} ranker: {reason})")


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
        model=ModelInfo.of(state.engine.fingerprint), index_version=index_version,
        timings_ms=RecommendTimings(**timings, total=(time.perf_counter() - start) * 1000.0),
    )
