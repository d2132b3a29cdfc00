"""Many gateway replicas, one catalog: hot-added and removed items shared through a Redis stream.

With `REASONREC_CATALOG_SYNC=true` every admin change is appended to one Redis stream (XADD) instead of
being saved to the replica's own index folder, and every replica applies every entry of that stream, in
stream order, to its in-memory store:

- an add carries the items *and their vectors* (float32 bytes), so one replica encodes and all apply the
  same vectors; a batch is one entry, applied all or none, as on a single replica;
- the replica that took the admin call applies the stream up to its own entry before answering, so the
  items are searchable there when the call returns (as without sync);
- the others are woken by a blocking XREAD and apply it within milliseconds;
- a replica that (re)starts loads the base index from disk and replays the whole stream before it reports
  ready, so a restart loses nothing that Redis kept (run Redis with AOF persistence in production).

Replicas therefore never write to the index folder, which may be shared read-only between them. The stream
key names the base index version (`<prefix>catalog:<version_id>`): a new base index (e.g. rebuilt with the
changes folded in) starts a fresh stream, and changes made against another base are never applied to it.
Applying in stream order on the same base gives every replica the same catalog and the same
`index_version`. Adds are applied as upserts: when two replicas add the same id at once, both calls succeed
and the later stream entry wins, everywhere. If Redis goes away, replicas keep serving the catalog they have
(the watcher retries every second) and admin calls answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from indexer.catalog import Item
from indexer.errors import UnknownItemError
from indexer.manifest import Manifest
from indexer.store import ItemStore
from service.metrics import Metrics

log = logging.getLogger(__name__)

WATCH_BLOCK_MS = 1000
PAGE = 256
RETRY_S = 1.0
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CatalogChange:
    """One admin change as the stream stores it."""

    op: Literal["add", "remove"]
    items: tuple[Item, ...] = ()
    """add: the items, in order."""
    vectors: np.ndarray | None = None
    """add: float32 (len(items), dim), the engine's raw item vectors."""
    item_id: str | None = None
    """remove: the id."""

    def to_fields(self) -> dict[str, bytes]:
        if self.op == "remove":
            return {"op": b"remove", "item_id": str(self.item_id).encode()}
        assert self.vectors is not None and len(self.vectors) == len(self.items), "an add needs one vector per item"
        vectors = np.ascontiguousarray(self.vectors, dtype="<f4")
        return {
            "op": b"add", "items": json.dumps([item.to_json() for item in self.items]).encode(),
            "dim": str(vectors.shape[1]).encode(), "vectors": vectors.tobytes(),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CatalogChange:
        op = fields[b"op"].decode()
        if op == "remove":
            return cls("remove", item_id=fields[b"item_id"].decode())
        if op != "add":
            raise ValueError(f"unknown catalog change {op!r}")
        items = tuple(Item.from_json(data) for data in json.loads(fields[b"items"]))
        vectors = np.frombuffer(fields[b"vectors"], dtype="<f4").reshape(len(items), int(fields[b"dim"]))
        return cls("add", items=items, vectors=vectors.astype(np.float32))


class CatalogSync:
    """Keeps one replica's store in step with the shared stream; `attach` once the base index is loaded."""

    def __init__(self, redis_url: str, prefix: str, metrics: Metrics) -> None:
        self.prefix = prefix
        self.metrics = metrics
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=WATCH_BLOCK_MS / 1000 + 5, socket_connect_timeout=2
        )
        self.store: ItemStore | None = None
        self.key = ""
        self.last_id = "0-0"
        self._apply_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    async def attach(self, store: ItemStore) -> None:
        """Replay every change recorded against this base index, then watch for new ones (raises if Redis fails)."""
        self.store, self.key, self.last_id = store, f"{self.prefix}catalog:{store.manifest.version_id}", "0-0"
        await self.catch_up()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="catalog-sync")
        log.info("catalog sync on %s: %d items after replay (version %d)", self.key, len(store), store.manifest.version)

    async def publish(self, change: CatalogChange) -> Manifest:
        """Append `change` to the stream and apply the stream up to it here; returns the resulting manifest."""
        store = self._attached()
        await self.redis.xadd(self.key, change.to_fields())
        await self.catch_up()
        return store.manifest

    async def catch_up(self) -> None:
        """Apply every stream entry after the last one applied, in order."""
        store = self._attached()
        async with self._apply_lock:
            while True:
                entries = await self.redis.xrange(self.key, min=f"({self.last_id}", count=PAGE)
                for entry_id, fields in entries:
                    await asyncio.to_thread(_apply, store, entry_id.decode(), fields)
                    self.last_id = entry_id.decode()
                if len(entries) < PAGE:
                    break
        self.metrics.index_items.set(len(store))

    async def close(self) -> None:
        """Stop watching and close the connection; bounded, so a shutdown never hangs on Redis."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait({self._watcher}, timeout=CLOSE_TIMEOUT_S)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), CLOSE_TIMEOUT_S)

    def _attached(self) -> ItemStore:
        if self.store is None:
            raise RuntimeError("catalog sync is not attached to a store yet")
        return self.store

    async def _watch(self) -> None:
        """Block on the stream (XREAD) and catch up whenever it grows; keep going through Redis outages."""
        while True:
            try:
                if await self.redis.xread({self.key: self.last_id}, count=1, block=WATCH_BLOCK_MS):
                    await self.catch_up()
            except (RedisError, OSError) as exc:
                log.warning("catalog sync: %s: %s; serving the catalog as it is, retrying", type(exc).__name__, exc)
                await asyncio.sleep(RETRY_S)


def _apply(store: ItemStore, entry_id: str, fields: dict[bytes, bytes]) -> None:
    """Apply one entry; one that cannot be applied (foreign or malformed) is logged and skipped by every replica."""
    try:
        change = CatalogChange.from_fields(fields)
    except (KeyError, ValueError) as exc:
        log.error("catalog sync: skipping stream entry %s: %r", entry_id, exc)
        return
    if change.op == "add":
        store.add_items(list(change.items), change.vectors, upsert=True)
        return
    with contextlib.suppress(UnknownItemError):  # removed twice (two admins at once): the first one counts
        store.remove_item(str(change.item_id))
