"""FastAPI dependencies, as `Annotated` aliases the routes declare: the app state, a ready item store, the admin
bearer-token check and the in-flight slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request

from indexer.store import ItemStore
from service.errors import ApiError
from service.guard import admin_refusal
from service.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.reasonrec


State = Annotated[AppState, Depends(get_state)]


async def get_store(state: State) -> ItemStore:
    """The item store; 503 (with the reason) while there is no usable index."""
    await state.ensure_index()
    return state.ready_store()


Store = Annotated[ItemStore, Depends(get_store)]


def require_admin(state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    """The admin token check of `service.guard` (which runs it before the body is read), repeated here so the
    OpenAPI document shows the header and no admin route can be served without it."""
    refusal = admin_refusal(state.settings.admin_token, authorization)
    if refusal is not None:
        raise refusal


async def inflight_slot(state: State) -> AsyncIterator[None]:
    """Hold one of `REASONREC_MAX_INFLIGHT` slots for the request; 429 at once when none is free."""
    if not state.limiter.try_acquire():
        raise ApiError(
            429, f"over the limit of {state.limiter.limit} requests in flight (REASONREC_MAX_INFLIGHT); retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        yield
    finally:
        state.limiter.release()


Admin = Depends(require_admin)
Slot = Depends(inflight_slot)
