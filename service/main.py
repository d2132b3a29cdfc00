"""The gateway app: `create_app` (app factory with a lifespan that loads engine, index and cache) and `serve`.

Laid out like the FastAPI full-stack template: routes by resource in `service.routes`, `Annotated`
dependencies in `service.deps`, one `Settings` (`REASONREC_*`). `serve(settings)` is what `reasonrec serve`
calls once the model and the index exist; tests build apps with `create_app(settings, engine=...)` to run a
fault-injecting engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from model.engine import Engine
from service.context import LOG_CONFIG, stamp_log_records
from service.errors import install_error_handlers
from service.guard import RequestGuard
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.rankers import check_ranker_settings
from service.routes import ROUTERS
from service.settings import Settings
from service.state import start_state

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


def serve(settings: Settings | None = None, engine: Engine | None = None) -> None:
    """Run the gateway with uvicorn on settings.host:settings.port until interrupted (logs carry request ids).

    `engine`: an engine the caller already loaded (e.g. the CLI, to find the index folder), so it is not loaded twice.
    """
    settings = settings or Settings()
    uvicorn.run(create_app(settings, engine=engine), host=settings.host, port=settings.port, log_config=LOG_CONFIG)
