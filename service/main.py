"""The gateway app: `create_app` (app factory with a lifespan that loads engine, index and cache) and `serve`
(the whole start-up of `reasonrec serve`: engine, artifacts, defaults, uvicorn).

Laid out like the FastAPI full-stack template: routes by resource in `service.routes`, `Annotated`
dependencies in `service.deps`, one `Settings` (`REASONREC_*`). Tests build apps with
`create_app(settings, engine=...)` to run a fault-injecting engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from indexer.core.paths import SHIPPED, finished_or_shipped, index_dir_for, sasrec_dir, table_dir
from model.engines.base import Engine
from model.networks.sasrec import finished_checkpoint
from model.networks.table_artifact import TableArtifact, finished_table
from model.rating.factors import finished_rating_model, rating_dir
from service.context import LOG_CONFIG, stamp_log_records
from service.errors import install_error_handlers
from service.guard import RequestGuard
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.rankers import check_ranker_settings
from service.routes import ROUTERS
from service.settings import Settings
from service.state import load_engine, start_state

log = logging.getLogger(__name__)

DESCRIPTION = """LLM-reasoning recommendations: the model reasons about a user's history, and its hidden state at
`<answer>` is searched against an index of item vectors from the same model.

Every error answers `{"error": {"type", "message", "param"}}`. Every response carries `x-request-id` (echoed
when sent) and `x-total-time` (milliseconds)."""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment); `engine` replaces loading `settings.model`."""
    settings = settings or Settings()
    check_ranker_settings(settings.default_ranker, settings.fallback_ranker)
    stamp_log_records()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await start_state(settings, metrics, engine)
        app.state.reasonrec = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="reasonrec", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings)  # inside the request context: refusals carry its id
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app


Prepare = Callable[[Settings, Engine, Path], None]
"""Builds what is missing for serving (`reasonrec serve` passes the trainer's index job): settings, the loaded
engine and the index folder it must fill."""


def default_artifacts(settings: Settings, engine: Engine) -> Settings:
    """Settings with the dataset's SASRec+ checkpoint, item table and rating model filled in where none is
    configured: the ones trained here when finished, else the ones shipped with the repository
    (`indexer.core.paths.SHIPPED`); a table only when it was trained on the served model's states."""
    updates: dict[str, Path | None] = {}
    if settings.sasrec_checkpoint is None:
        updates["sasrec_checkpoint"] = finished_or_shipped(
            sasrec_dir(settings.dataset), SHIPPED / settings.dataset / "sasrec", lambda f: bool(finished_checkpoint(f)))
        if updates["sasrec_checkpoint"] is None:
            log.warning("no finished SASRec+ checkpoint for %s: the sasrec ranker is off and the fallback is popular "
                        "(train it with `reasonrec train-sasrec --dataset %s`)", settings.dataset, settings.dataset)
    if settings.table is None:
        table = finished_or_shipped(table_dir(settings.dataset), SHIPPED / settings.dataset / "table", finished_table)
        if table is not None and TableArtifact.load(table).fingerprint == engine.fingerprint:
            updates["table"] = table
        else:
            log.warning("no item table for %s and %s: the direct and reasoning rankers rank by the cosine of raw "
                        "states (train one with `reasonrec train-table --dataset %s`)", settings.dataset,
                        engine.fingerprint.model_id, settings.dataset)
    if settings.rating_model is None:
        updates["rating_model"] = finished_or_shipped(
            rating_dir(settings.dataset), SHIPPED / settings.dataset / "rating", finished_rating_model)
        if updates["rating_model"] is None:
            log.warning("no rating model for %s: /rate uses the guided LLM rating (train one with `reasonrec "
                        "train-rating --dataset %s`)", settings.dataset, settings.dataset)
    return settings.model_copy(update=updates)


def serve(settings: Settings | None = None, prepare: Prepare | None = None) -> None:
    """Load the engine once, fill in the default artifacts (`default_artifacts`), let `prepare` build a missing
    index, then run the gateway with uvicorn until interrupted (logs carry request ids)."""
    engine = load_engine(settings or Settings())
    settings = default_artifacts(settings or Settings(), engine)
    if prepare is not None:
        table = TableArtifact.load(settings.table).table_hash if settings.table else None
        prepare(settings, engine, index_dir_for(settings.dataset, engine.fingerprint, settings.index_dir, table))
    base = f"http://{settings.host}:{settings.port}"
    print(f"\nserving on {base}  (docs: {base}/docs)\ntry:\n  curl -s {base}/recommend -H 'content-type: "
          "application/json' -d '{\"history\": [{\"item_id\": \"1\", \"rating\": 5}, {\"item_id\": \"50\", "
          "\"rating\": 4}], \"k\": 5}'\n", flush=True)
    uvicorn.run(create_app(settings, engine=engine), host=settings.host, port=settings.port, log_config=LOG_CONFIG)
