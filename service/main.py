"""The gateway app: `create_app` (app factory with a lifespan that loads engine, index and cache) and `serve`
(the whole start-up of `reasonrec serve`: engine, artifacts, defaults, uvicorn).

Laid out like the FastAPI full-stack template: routes by resource in `service.routes`, `Annotated`
dependencies in `service.deps`, one `Settings` (`REASONREC_*`). Tests build apps with
`create_app(settings, engine=...)` to run a fault-injecting engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from model.engines.base import Engine
from service.context import LOG_CONFIG, stamp_log_records
from service.errors import install_error_handlers
from service.guard import RequestGuard
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.rankers import check_ranker_settings
from service.routes import ROUTERS
from service.settings import Settings
from service.simulated_users import start_simulated_users
from service.startup import Served, resolve
from service.state import start_state

log = logging.getLogger(__name__)

DESCRIPTION = """LLM-reasoning recommendations: the model reasons about a user's history, and its hidden state at
`<answer>` is searched against an index of item vectors from the same model.

Every error answers `{"error": {"type", "message", "param"}}`. Every response carries `x-request-id` (echoed
when sent) and `x-total-time` (milliseconds)."""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               served: Served | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment), resolved at start-up (`service.startup.resolve`)
    unless `served` is given; `engine` replaces loading `settings.model`."""
    settings = served.settings if served is not None else settings or Settings()
    check_ranker_settings(settings.default_ranker, settings.fallback_ranker)
    stamp_log_records()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = served or await asyncio.to_thread(resolve, settings, engine)
        state = await start_state(resolved, metrics)
        app.state.reasonrec = state
        job = start_simulated_users(state, resolved)
        try:
            yield
        finally:
            if job is not None:
                await job.stop()
            await state.close()

    app = FastAPI(title="reasonrec", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings)  # inside the request context: refusals carry its id
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app


Prepare = Callable[[str, Path | None, Engine, Path], None]
"""Builds what is missing for serving (`reasonrec serve` passes the trainer's index job): the dataset, the served
item table (None: raw states), the loaded engine and the index folder it must fill."""


def serve(settings: Settings | None = None, prepare: Prepare | None = None, listen: bool = True) -> None:
    """Resolve what to serve once (`service.startup.resolve`), let `prepare` build a missing index, then run the
    gateway with uvicorn until interrupted (logs carry request ids); with `listen` false, stop after preparing."""
    served = resolve(settings or Settings())
    settings = served.settings
    if prepare is not None:
        prepare(settings.dataset, settings.table, served.engine, served.index_dir)
    if not listen:
        print(f"ready to serve: index at {served.index_dir}", flush=True)
        return
    base = f"http://{settings.host}:{settings.port}"
    print(f"\nserving on {base}  (docs: {base}/docs)\ntry:\n  curl -s {base}/recommend -H 'content-type: "
          "application/json' -d '{\"history\": [{\"item_id\": \"1\", \"rating\": 5}, {\"item_id\": \"50\", "
          "\"rating\": 4}], \"k\": 5}'\n", flush=True)
    uvicorn.run(create_app(served=served), host=settings.host, port=settings.port, log_config=LOG_CONFIG)
