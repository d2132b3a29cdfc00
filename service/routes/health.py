"""Probes and metrics: GET /healthz (process up), GET /readyz (model, engine, index, cache), GET /metrics
(Prometheus).

Readiness and the cache: a down Redis is reported in /readyz but does not make the service unready, since the
service answers correctly without its cache (slower, `cached: false`); taking every replica out of rotation
because a shared Redis went away would turn a slowdown into an outage. `reasonrec_cache_total{result="error"}`
is what to alert on.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import State
from service.engine_health import engine_state
from service.errors import ApiError
from service.schemas import HealthResponse, ReadyResponse, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, responses=error_responses(503))
async def readyz(state: State) -> ReadyResponse:
    store = await state.ensure_index()
    if store is None:
        raise ApiError(503, f"not ready: index: {state.index_problem}")
    sync_problem = state.sync.problem() if state.sync is not None else None
    if sync_problem is not None:
        raise ApiError(503, f"not ready: {sync_problem}")
    cache, engine = await asyncio.gather(state.cache.state(), engine_state(state.settings))
    fp = state.engine.fingerprint
    return ReadyResponse(
        status="ready",
        model=f"ready: {fp.model_id} ({fp.weights_hash})",
        engine=engine,
        index=f"ready: {len(store)} items, version {store.manifest.version} at {state.index_dir}",
        cache=f"{cache.backend}: {cache.detail}",
        index_version=store.manifest.version,
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
