"""Calling the engine off the event loop, with the request deadline attached and failures turned into a reason.

The engine is CPU-bound and blocking, so each call runs in a worker thread. The deadline travels into that
thread as `model.engines.batching.current_deadline` (`asyncio.to_thread` copies the context): a batching engine drops
a call whose deadline passed while it was queued (`DeadlineExpired`, reported as `EngineFailure("timeout")`).
How long a request waits for the engine is decided by the caller (`service.coalesce`), not here: a call that has
started is never abandoned half-way, so its result can still be cached. Any other exception the engine raises is
logged and reported as `EngineFailure("engine_error")`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal, TypeVar

from model.engines.base import Deadline, DeadlineExpired, current_deadline
from service.errors import CannotRank

log = logging.getLogger(__name__)

T = TypeVar("T")
FailureReason = Literal["timeout", "engine_error"]


class EngineFailure(CannotRank):
    """The engine did not answer in time, or raised (or answered something unusable); `reason` is what the
    response's `fallback` says."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason)
        self.reason: FailureReason = reason


async def call_engine(fn: Callable[[], T], deadline: Deadline) -> T:
    """Run `fn()` in a worker thread that sees `deadline`; raise `EngineFailure` if it was dropped or raised."""
    token = current_deadline.set(deadline)
    try:
        return await asyncio.to_thread(fn)
    except DeadlineExpired as exc:
        log.warning("engine call dropped unstarted: its deadline passed while it was queued")
        raise EngineFailure("timeout") from exc
    except Exception as exc:
        log.exception("engine call failed; answering with the fallback")
        raise EngineFailure("engine_error") from exc
    finally:
        current_deadline.reset(token)
