"""FastAPI dependencies, as `Annotated` aliases the routes declare: the app state, a ready item store, the admin
bearer-token check and the in-flight slot.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request

from indexer.store import ItemStore
from service.errors import ApiError
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
    """403 when no admin token is configured (secure by default), 401 for a missing or wrong bearer token."""
    secret = state.settings.admin_token
    if secret is None:
        raise ApiError(403, "the admin routes are disabled: set REASONREC_ADMIN_TOKEN to enable them")
    scheme, _, token = (authorization or "").partition(" ")
    expected = secret.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected):
        raise ApiError(
            401, "missing or wrong admin token: send the header Authorization: Bearer <REASONREC_ADMIN_TOKEN>",
            param="Authorization", headers={"WWW-Authenticate": "Bearer"},
        )


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
