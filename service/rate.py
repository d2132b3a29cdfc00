"""POST /rate behind the route: the rating model with grounded reasoning, or the guided LLM rating.

With a rating model (`REASONREC_RATING_MODEL`, filled in by `reasonrec serve`; `REASONREC_RATE_WITH=model`), the
user is folded in from the history and the rating is the model's (`model.rating.factors`, microseconds); the
`reasoning` mode wraps it in the four RecZero tags written from the data (`model.rating.reasons`: every claim
true, the `<match>` verdict agreeing with the number), the `direct` mode in `<rate>N</rate>`; `parsed` is true.
Nothing is cached: it costs less than a cache lookup.

Otherwise (no rating model, or `REASONREC_RATE_WITH=llm`: the ablation) the guided LLM rating:
`model.rating.predict_ratings` guides the format (each tag is opened for the model, and the rating is read
from its probabilities over 1..5 after `<rate>`), so the answer normally holds exactly one valid
`<rate>N</rate>` and `rating` is the expected value. The answer counts as parsed when it has the full format
of its mode (four tags in order for `reasoning`, one `<rate>` for `direct`; `parse_rating_output`). Otherwise,
or when the engine timed out or failed, the rating is an estimate: the item's average rating, else the user's
average in the history, else 3, with `parsed: false`. Engine answers are cached (key: fingerprint, mode, tokens per
tag, prompt), identical concurrent requests share one engine computation, and an answer that comes after the
deadline is still cached (`service.coalesce`); estimates after an engine failure are not cached.
"""

from __future__ import annotations

import time

from indexer.core.catalog import Item
from indexer.store import ItemStore
from model.engines.base import Deadline
from model.prompts import UserHistory, direct_rating_prompt, rating_prompt
from model.rating.guided import parse_rating_output, predict_ratings
from model.rating.reasons import model_rating
from service.cache import CacheEntry, cache_key
from service.engine_calls import EngineFailure, call_engine
from service.errors import ApiError
from service.history import resolve_history
from service.schemas import ModelInfo, RateRequest, RateResponse, RateTimings
from service.state import AppState

NEUTRAL_RATING = 3.0


def estimate_rating(item: Item, history: UserHistory) -> float:
    """Item average, else the user's average rating in the history, else 3; clipped to 1..5."""
    rated = [line.rating for line in history.lines if line.rating is not None]
    value = item.avg_rating if item.avg_rating is not None else (sum(rated) / len(rated) if rated else None)
    return min(5.0, max(1.0, float(value if value is not None else NEUTRAL_RATING)))


def usable_rating(entry: CacheEntry) -> bool:
    """Whether a cached or computed entry holds what a response needs: a finite rating 1..5, the reasoning text
    (or null) and the parsed flag."""
    meta = entry.meta
    rating = meta.get("rating")
    return (isinstance(rating, (int, float)) and not isinstance(rating, bool) and 1.0 <= rating <= 5.0
            and isinstance(meta.get("reasoning"), (str, type(None))) and isinstance(meta.get("parsed"), bool))


async def predict(state: AppState, prompt: str, reasoning: bool, estimate: float, deadline: Deadline) -> CacheEntry:
    """Guided rating in a worker thread; an answer without one valid `<rate>` keeps its text, takes the estimate."""
    tokens_per_tag = state.settings.rating_tokens_per_tag
    pred = await call_engine(
        lambda: predict_ratings(state.engine, [prompt], reasoning=reasoning, max_tokens_per_tag=tokens_per_tag)[0],
        deadline,
    )
    state.metrics.generated_tokens.inc(pred.generated_tokens)
    parsed = parse_rating_output(pred.text, require_reasoning=reasoning) is not None
    return CacheEntry({"rating": pred.rating if parsed else estimate, "reasoning": pred.text, "parsed": parsed})


async def rate(state: AppState, store: ItemStore, body: RateRequest) -> RateResponse:
    start = time.perf_counter()
    catalog = store.catalog
    item = catalog.get(body.item_id)
    if item is None:
        raise ApiError(422, f"item_id: unknown item id {body.item_id!r}", param="item_id")
    history = resolve_history(body.history, catalog)
    if state.rating is not None and state.settings.rate_with == "model":
        rating, text = model_rating(state.rating, history, catalog, item, body.mode == "reasoning")
        elapsed = (time.perf_counter() - start) * 1000.0
        return RateResponse(rating=rating, reasoning=text, parsed=True, cached=False, fallback=None,
                            model=ModelInfo.of(state.engine.fingerprint),
                            timings_ms=RateTimings(rating=elapsed, total=elapsed))
    reasoning = body.mode == "reasoning"
    prompt = (rating_prompt if reasoning else direct_rating_prompt)(history.lines, item)
    params = {"greedy": True, "max_tokens_per_tag": state.settings.rating_tokens_per_tag if reasoning else None}
    key = cache_key(state.engine.fingerprint, f"rate-{body.mode}", params, prompt)
    timings: dict[str, float] = {}
    estimate = estimate_rating(item, history)
    cached, fallback = False, None
    try:
        entry, cached = await state.coalescer.get(
            key, lambda deadline: predict(state, prompt, reasoning, estimate, deadline), accept=usable_rating,
            stage="rating",
            timeout_s=state.settings.request_timeout_s, timings_ms=timings,
        )
    except EngineFailure as failure:
        state.metrics.fallback_total.labels(failure.reason).inc()
        fallback = failure.reason
        entry = CacheEntry({"rating": estimate, "reasoning": None, "parsed": False})
    return RateResponse(
        rating=entry.meta["rating"], reasoning=entry.meta["reasoning"], parsed=entry.meta["parsed"], cached=cached,
        fallback=fallback, model=ModelInfo.of(state.engine.fingerprint),
        timings_ms=RateTimings(**timings, total=(time.perf_counter() - start) * 1000.0),
    )
