"""Many gateway replicas, one catalog: hot-added and removed items shared through a Redis stream.

With `REASONREC_CATALOG_SYNC=true` every admin change is appended to one Redis stream (XADD) instead of
being saved to the replica's own index folder, and every replica applies every entry of that stream, in
stream order, to its in-memory store:

- an add carries the items *and their vectors* (float32 bytes), so one replica encodes and all apply the
  same vectors; a batch is one entry, applied all or none, as on a single replica; vectors are checked before
  they reach the index (size, finite values and, for item-table rows, a bound on their length: `norm_bound_of`);
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
from pydantic import ValidationError
from redis.exceptions import RedisError

from indexer.core.catalog import Item
from indexer.errors import UnknownItemError
from indexer.manifest import Manifest
from indexer.store import ItemStore
from service.metrics import Metrics
from service.schemas import ItemOut

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
    def from_fields(cls, fields: dict[bytes, bytes], dim: int, norm_bound: float | None = None) -> CatalogChange:
        """Parse and check a stream entry for an index of `dim` (and rows no longer than `norm_bound`); raises
        `BadEntry` naming what is wrong."""
        try:
            op = fields[b"op"].decode()
            if op == "remove":
                return cls("remove", item_id=fields[b"item_id"].decode())
            if op != "add":
                raise BadEntry("malformed", f"unknown catalog change {op!r}")
            items = parse_items(fields[b"items"])
            vectors = parse_vectors(fields[b"vectors"], fields[b"dim"], len(items), dim, norm_bound)
            return cls("add", items=items, vectors=vectors)
        except BadEntry:
            raise
        except (KeyError, ValueError) as exc:  # a missing field, bytes that are not UTF-8 or not a number
            raise BadEntry("malformed", f"{type(exc).__name__}: {exc}") from exc


SkipReason = Literal["malformed", "vectors", "rejected"]


class BadEntry(ValueError):
    """A stream entry that cannot be applied; `reason` labels `reasonrec_catalog_sync_skipped_total`."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SkipReason = reason


def parse_items(raw: bytes) -> tuple[Item, ...]:
    """The items of an add: a non-empty JSON list of what `GET /items/{id}` answers (`ItemOut`), checked field by
    field. Fields this version does not know (written by a newer one) are dropped with a warning."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadEntry("malformed", f"items are not JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise BadEntry("malformed", "items must be a non-empty JSON list")
    items = []
    for position, entry in enumerate(data):
        try:
            checked = ItemOut.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise BadEntry("malformed", f"items[{position}]{'.' + where if where else ''}: {first['msg']}") from exc
        unknown = sorted(set(entry) - set(ItemOut.model_fields))
        if unknown:
            log.warning("catalog sync: item %r has fields this version does not know, dropped: %s",
                        checked.item_id, ", ".join(unknown))
        items.append(Item.from_json(checked.model_dump()))
    return tuple(items)


def parse_vectors(raw: bytes, raw_dim: bytes, count: int, dim: int, norm_bound: float | None = None) -> np.ndarray:
    """float32 (count, dim) from little-endian bytes; the size must match the index, every value be finite and, with
    `norm_bound`, no row longer than it (`norm_bound_of`)."""
    stored_dim = int(raw_dim)
    if stored_dim != dim or len(raw) != 4 * count * dim:
        raise BadEntry("vectors", f"{len(raw)} bytes of vectors of dim {stored_dim} for {count} item(s); the index "
                       f"needs dim {dim}, {4 * count * dim} bytes")
    vectors = np.frombuffer(raw, dtype="<f4").reshape(count, dim).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise BadEntry("vectors", "the vectors hold NaN or infinite values")
    if norm_bound is not None:
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        if (norms > norm_bound).any():
            raise BadEntry("vectors", f"a vector of norm {norms.max():.4g} is over the bound {norm_bound:.4g} "
                           f"({NORM_SLACK:g} x the longest row of the base index)")
    return vectors


NORM_SLACK = 4.0
"""How much longer than the longest row of the base index a shared vector may be."""


def norm_bound_of(store: ItemStore) -> float | None:
    """The longest row a catalog change may add to `store`: NORM_SLACK x its longest row, for an inner-product
    index (item-table rows), where a row's length scales its score for every user, so one huge row would top every
    list; None for a cosine index, which normalizes every row (and an empty one)."""
    if store.manifest.metric != "ip" or len(store) == 0:
        return None
    rows = store.vectors_of(store.catalog.ids())
    return NORM_SLACK * float(np.linalg.norm(rows.astype(np.float64), axis=1).max())


class CatalogSync:
    """Keeps one replica's store in step with the shared stream; `attach` once the base index is loaded."""

    def __init__(self, redis_url: str, prefix: str, metrics: Metrics, password: str | None = None) -> None:
        self.prefix = prefix
        self.metrics = metrics
        self.redis = aioredis.Redis.from_url(
            redis_url, password=password, socket_timeout=WATCH_BLOCK_MS / 1000 + 5, socket_connect_timeout=2
        )
        self.store: ItemStore | None = None
        self.norm_bound: float | None = None
        """The longest vector an entry may add (`norm_bound_of` the base index, measured when attached)."""
        self.key = ""
        self.last_id = "0-0"
        self._apply_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    async def attach(self, store: ItemStore) -> None:
        """Replay every change recorded against this base index, then watch for new ones (raises if Redis fails)."""
        self.store, self.key, self.last_id = store, f"{self.prefix}catalog:{store.manifest.version_id}", "0-0"
        self.norm_bound = await asyncio.to_thread(norm_bound_of, store)
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
                    await asyncio.to_thread(self._apply, store, entry_id.decode(), fields)
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

    def problem(self) -> str | None:
        """Why this replica no longer follows the shared catalog (its watcher stopped), or None."""
        watcher = self._watcher
        if watcher is None or not watcher.done():
            return None
        cause = "it was cancelled" if watcher.cancelled() else repr(watcher.exception())
        return f"catalog sync stopped watching the shared changes ({cause}); restart the replica"

    def _apply(self, store: ItemStore, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Apply one entry; one that cannot be applied is skipped, counted and logged (by every replica alike, so
        they stay equal). Runs in a worker thread."""
        try:
            apply_change(store, CatalogChange.from_fields(fields, store.manifest.dim, self.norm_bound))
        except BadEntry as exc:
            self._skip(entry_id, exc.reason, exc)
        except (ValueError, TypeError, KeyError) as exc:  # the store refused it, e.g. an empty id or a zero vector
            self._skip(entry_id, "rejected", exc)

    def _skip(self, entry_id: str, reason: SkipReason, exc: Exception) -> None:
        self.metrics.catalog_sync_skipped.labels(reason).inc()
        log.error("catalog sync: skipping stream entry %s of %s (%s): %s", entry_id, self.key, reason, exc)

    def _attached(self) -> ItemStore:
        if self.store is None:
            raise RuntimeError("catalog sync is not attached to a store yet")
        return self.store

    async def _watch(self) -> None:
        """Block on the stream (XREAD) and catch up whenever it grows; keep going through Redis outages and any
        other error (logged): a watcher that died would leave the replica serving a stale catalog unnoticed."""
        while True:
            try:
                if await self.redis.xread({self.key: self.last_id}, count=1, block=WATCH_BLOCK_MS):
                    await self.catch_up()
            except (RedisError, OSError) as exc:
                log.warning("catalog sync: %s: %s; serving the catalog as it is, retrying", type(exc).__name__, exc)
                await asyncio.sleep(RETRY_S)
            except Exception:
                log.exception("catalog sync: unexpected error while following %s; retrying", self.key)
                await asyncio.sleep(RETRY_S)


def apply_change(store: ItemStore, change: CatalogChange) -> None:
    if change.op == "add":
        store.add_items(list(change.items), change.vectors, upsert=True)
        return
    with contextlib.suppress(UnknownItemError):  # removed twice (two admins at once): the first one counts
        store.remove_item(str(change.item_id))
