"""The reasoning/rating cache: Redis when `REASONREC_REDIS_URL` is set, an in-process LRU otherwise.

Keys (`cache_key`) are a sha256 over the model fingerprint (model id, weights hash, adapter hash, template
version), the mode, the sampling parameters and the prompt; never over the index version, so a cached user
vector stays valid when items are added. A value is a JSON header line followed by the raw float32 bytes of
the vector, if any (`encode`/`decode`).

A cache never fails a request: `Cache` counts every lookup (`reasonrec_cache_total{result}`: hit, miss,
invalid, error) and turns backend errors, and values its caller cannot use, into misses. After a Redis error
the backend is skipped (counted as an error) for `REDIS_RETRY_AFTER_S`, so a dead or blackholed Redis costs one
socket timeout per second, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from indexer.core.fingerprint import ModelFingerprint
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER_S = 1.0
KEY_SCHEMA = "v1"  # bump when the value layout changes
_FAILED = object()  # what `Cache._call` returns when the backend could not be used


@dataclass(frozen=True)
class CacheEntry:
    """What is cached: JSON-able fields and, for the rankers, the user vector."""

    meta: dict[str, Any]
    vector: np.ndarray | None = None


Accept = Callable[[CacheEntry], bool]
"""Whether a cache entry is one its user can serve (a cached value is only as trustworthy as Redis's access)."""


@dataclass(frozen=True)
class CacheState:
    """What /readyz reports about the cache."""

    backend: str
    detail: str


def cache_key(fingerprint: ModelFingerprint, mode: str, params: dict[str, Any], prompt: str) -> str:
    """sha256 hex over everything that determines the engine's output for `prompt` (not the index version)."""
    material = {"fingerprint": fingerprint.to_json(), "mode": mode, "params": params, "prompt": prompt}
    payload = json.dumps(material, sort_keys=True, ensure_ascii=False).encode()
    return f"{KEY_SCHEMA}:{hashlib.sha256(payload).hexdigest()}"


def encode(entry: CacheEntry) -> bytes:
    vector = None if entry.vector is None else np.ascontiguousarray(entry.vector, dtype="<f4")
    header = {"meta": entry.meta, "dim": None if vector is None else int(vector.shape[0])}
    return json.dumps(header).encode() + b"\n" + (b"" if vector is None else vector.tobytes())


def decode(data: bytes) -> CacheEntry:
    """Inverse of `encode`; raises ValueError on anything else (e.g. a foreign value under our prefix), including
    a field of `META_TYPES` whose value has another type."""
    head, sep, body = data.partition(b"\n")
    try:
        header = json.loads(head)
        meta, dim = header["meta"], header["dim"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a reasonrec cache value ({exc})") from exc
    if not sep or not isinstance(meta, dict) or (dim is None) != (not body) or (dim and len(body) != 4 * dim):
        raise ValueError("not a reasonrec cache value (header and vector bytes disagree)")
    check_meta_types(meta)
    vector = None if dim is None else np.frombuffer(body, dtype="<f4").astype(np.float32)
    return CacheEntry(meta, vector)


META_TYPES: dict[str, tuple[type, ...]] = {
    "reasoning": (str, type(None)),
    "generated_tokens": (int,),
    "wrote_marker": (bool,),
    "rating": (int, float),
    "parsed": (bool,),
}
"""The type of every field a cached value may hold: what the language-model rankers store
(`model.rankers.llm.UserState.meta`) and what /rate stores (`service.rate`). A value read back is checked against
it before any caller sees it, so a field of the wrong type (planted by whoever reached Redis, or written by
another version) is a skipped, counted entry rather than an error later in the request."""


def check_meta_types(meta: dict[str, Any]) -> None:
    """ValueError naming the first field of `META_TYPES` whose value has another type (a bool is no number)."""
    for name, value in meta.items():
        expected = META_TYPES.get(name)
        if expected is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in expected
        if wrong_bool or not isinstance(value, expected):
            raise ValueError(f"field {name!r} holds {type(value).__name__} {value!r:.40}, not "
                             f"{' or '.join(t.__name__ for t in expected)}")


class Backend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def ping(self) -> str: ...

    async def close(self) -> None: ...


@dataclass
class LruBackend:
    """An in-process LRU with a TTL; used from the event loop only, so it needs no lock."""

    size: int
    ttl_s: float
    name: str = "memory"
    _data: OrderedDict[str, tuple[float, bytes]] = field(default_factory=OrderedDict)

    async def get(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None or found[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return found[1]

    async def set(self, key: str, value: bytes) -> None:
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    async def ping(self) -> str:
        return f"in-process LRU, {len(self._data)}/{self.size} entries"

    async def close(self) -> None:
        self._data.clear()


class RedisBackend:
    """Redis with short socket timeouts and no retries: a slow Redis is an error, not a wait."""

    name = "redis"

    def __init__(self, url: str, prefix: str, ttl_s: int, timeout_s: float, password: str | None = None) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._client = aioredis.Redis.from_url(
            url, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    async def _bounded(self, call: Any) -> Any:
        # the socket timeouts bound each step; this bounds the whole call (e.g. name resolution)
        return await asyncio.wait_for(call, timeout=3 * self.timeout_s)

    async def get(self, key: str) -> bytes | None:
        return await self._bounded(self._client.get(self.prefix + key))

    async def set(self, key: str, value: bytes) -> None:
        await self._bounded(self._client.set(self.prefix + key, value, ex=self.ttl_s))

    async def ping(self) -> str:
        await self._bounded(self._client.ping())
        return "redis reachable"

    async def close(self) -> None:
        await self._client.aclose()


class Cache:
    """The front the rankers use: counts lookups, swallows backend errors, backs off from a failing Redis."""

    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend = backend
        self.metrics = metrics
        self._skip_until = 0.0

    async def get(self, key: str, accept: Accept = lambda entry: True) -> CacheEntry | None:
        """The entry under `key`, or None. A value that does not decode, or that `accept` refuses (its caller could
        not use it: e.g. a vector of another size, planted by whoever reached Redis), is ignored: counted as
        `invalid`, logged, and recomputed by the caller, whose result replaces it."""
        data = await self._call("get", self.backend.get, key)
        if data is _FAILED:
            self.metrics.cache_total.labels("error").inc()
            return None
        if data is None:
            self.metrics.cache_total.labels("miss").inc()
            return None
        try:
            entry = decode(data)
            if not accept(entry):
                raise ValueError("its fields or vector are not what this lookup uses")
        except ValueError as exc:
            log.warning("ignoring cache value under key %s: %s", key, exc)
            self.metrics.cache_total.labels("invalid").inc()
            return None
        self.metrics.cache_total.labels("hit").inc()
        return entry

    async def set(self, key: str, entry: CacheEntry) -> None:
        if await self._call("set", self.backend.set, key, encode(entry)) is _FAILED:
            self.metrics.cache_total.labels("error").inc()

    async def state(self) -> CacheState:
        """Ping the backend; a failing Redis is reported but never makes the service unready."""
        try:
            return CacheState(self.backend.name, await self.backend.ping())
        except (RedisError, OSError, TimeoutError) as exc:
            return CacheState(self.backend.name, f"unreachable, serving uncached ({type(exc).__name__})")

    async def close(self) -> None:
        await self.backend.close()

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        if time.monotonic() < self._skip_until:
            return _FAILED
        try:
            return await fn(*args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._skip_until = time.monotonic() + REDIS_RETRY_AFTER_S
            log.warning("cache %s failed (%s: %s); going on uncached", what, type(exc).__name__, exc)
            return _FAILED


def make_cache(settings: Settings, metrics: Metrics) -> Cache:
    """Redis when `redis_url` is set, else the in-process LRU."""
    if settings.redis_url:
        backend: Backend = RedisBackend(
            settings.redis_url, settings.cache_prefix, settings.cache_ttl_s, settings.cache_timeout_s,
            settings.redis_secret(),
        )
    else:
        backend = LruBackend(settings.cache_size, float(settings.cache_ttl_s))
    return Cache(backend, metrics)
