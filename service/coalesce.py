"""Request coalescing: identical concurrent engine work (same cache key) is computed once, and its result lands
in the cache even when every request that waited for it has given up.

There is at most one in-flight computation per cache key (an asyncio task). A request whose key is in flight
joins it without looking up the cache; otherwise it looks up the cache and, on a miss, starts the computation.
Every request waits until its own deadline (`request_timeout_s` from the moment it started waiting), then
raises `EngineFailure("timeout")` so the caller can fall back. The computation is shielded and runs on: an
engine call that has started finishes, its result is stored in the cache, and a retry hits it (or joins it while
it still runs). The computation's `Deadline` is the latest of its waiters' deadlines; a batching engine drops
the work instead of starting it once that has passed (`model.engines.batching`), so nobody's abandoned request is
computed under overload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from model.engines.base import Deadline
from service.cache import Accept, Cache, CacheEntry
from service.engine_calls import EngineFailure
from service.metrics import Metrics

log = logging.getLogger(__name__)

Compute = Callable[[Deadline], Awaitable[CacheEntry]]
"""Computes a cache entry; the engine calls it makes should carry the deadline (`call_engine`)."""


@dataclass
class _Flight:
    task: asyncio.Task[CacheEntry]
    deadline: Deadline


def _retrieve(task: asyncio.Task[CacheEntry]) -> None:
    """Mark a flight's failure as seen: its waiters may all have left already."""
    if not task.cancelled():
        task.exception()


class Coalescer:
    """One in-flight computation per cache key, shared by every request for that key. Event-loop only."""

    def __init__(self, cache: Cache, metrics: Metrics) -> None:
        self.cache = cache
        self.metrics = metrics
        self._flights: dict[str, _Flight] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    async def get(
        self, key: str, compute: Compute, *, accept: Accept, stage: str, timeout_s: float, timings_ms: dict[str, float]
    ) -> tuple[CacheEntry, bool]:
        """(entry, cached): the cached entry, else the result of the computation for `key` (joined or started).

        `accept` says whether an entry is usable; a cached one it refuses is recomputed, a computed one it refuses
        is not cached and fails as "engine_error" (e.g. a NaN vector from a broken model). Time spent waiting for
        the computation is added to `timings_ms[stage]`; raises `EngineFailure` when the wait passes `timeout_s`
        ("timeout") or the computation failed (its reason).
        """
        if key not in self._flights:
            with self.metrics.stage("cache", timings_ms):
                entry = await self.cache.get(key, accept)
            if entry is not None:
                return entry, True
        give_up_at = time.monotonic() + timeout_s
        with self.metrics.stage(stage, timings_ms):
            flight = self._join(key, compute, accept, give_up_at)
            try:
                entry = await asyncio.wait_for(asyncio.shield(flight.task), timeout=give_up_at - time.monotonic())
            except TimeoutError as exc:
                log.warning("engine work exceeded the %.3g s deadline; answering with the fallback", timeout_s)
                raise EngineFailure("timeout") from exc
        return entry, False

    def _join(self, key: str, compute: Compute, accept: Accept, give_up_at: float) -> _Flight:
        flight = self._flights.get(key)
        if flight is not None:
            flight.deadline.extend(give_up_at)
            self.metrics.coalesced.inc()
            return flight
        deadline = Deadline(give_up_at)
        flight = _Flight(asyncio.create_task(self._fly(key, compute, accept, deadline)), deadline)
        flight.task.add_done_callback(_retrieve)
        self._flights[key] = flight
        return flight

    async def _fly(self, key: str, compute: Compute, accept: Accept, deadline: Deadline) -> CacheEntry:
        try:
            entry = await compute(deadline)
            if not accept(entry):
                log.error("the engine answered something unusable (e.g. a NaN vector); not cached, falling back")
                raise EngineFailure("engine_error")
            await self.cache.set(key, entry)
            if deadline.expired():
                self.metrics.late_results.inc()
            return entry
        finally:
            del self._flights[key]
