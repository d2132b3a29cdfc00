"""Calling the engine off the event loop, under a deadline, with failures turned into a fallback reason.

The engine is CPU-bound and blocking, so each call runs in a worker thread. A call past its deadline is
abandoned (a running torch computation cannot be interrupted; its thread finishes in the background and the
engine's lock serializes it with later calls) and reported as `EngineFailure("timeout")`; any exception the
engine raises is logged and reported as `EngineFailure("engine_error")`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
FailureReason = Literal["timeout", "engine_error"]


class EngineFailure(Exception):
    """The engine did not answer in time, or raised; `reason` is what the response's `fallback` says."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason)
        self.reason: FailureReason = reason


async def call_engine(fn: Callable[[], T], timeout_s: float) -> T:
    """Run `fn()` in a worker thread; raise `EngineFailure` on timeout or on any exception it raises."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn), timeout=timeout_s)
    except TimeoutError as exc:
        log.warning("engine call exceeded its %.3g s deadline; answering with the fallback", timeout_s)
        raise EngineFailure("timeout") from exc
    except Exception as exc:
        log.exception("engine call failed; answering with the fallback")
        raise EngineFailure("engine_error") from exc
