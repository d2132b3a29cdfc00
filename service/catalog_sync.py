"""Many gateway replicas, one catalog: hot-added and removed items shared through a Redis stream.

With `REASONREC_CATALOG_SYNC=true` every admin change is appended to one Redis stream (XADD) instead of
being saved to the replica's own index folder, and every replica applies every entry of that stream, in
stream order, to its in-memory store:

- an add carries the items *and their vectors* (float32 bytes), so one replica encodes and all apply the
  same vectors; a batch is one entry, applied all or none, as on a single replica; every entry is checked
  before it reaches the index (`service.catalog_sync_entries`);
- the replica that took the admin call applies the stream up to its own entry before answering, so the
  items are searchable there when the call returns (as without sync);
- the others are woken by a blocking XREAD and apply it within milliseconds;
- a replica that (re)starts loads the base index from disk, applies the latest snapshot and replays the
  stream after it before it reports ready, so a restart loses nothing that Redis kept (run the catalog's Redis
  with AOF and noeviction); the stream is trimmed behind each snapshot (`service.catalog_snapshot`), so what a
  new replica replays is the catalog's present, not its history.

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
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from indexer.errors import UnknownItemError
from indexer.manifest import Manifest
from indexer.store import ItemStore
from service.catalog_snapshot import SNAPSHOT_EVERY, Overlay, Snapshot, after, stream_id_key
from service.catalog_sync_entries import BadEntry, CatalogChange, SkipReason, norm_bound_of
from service.metrics import Metrics

log = logging.getLogger(__name__)

WATCH_BLOCK_MS = 1000
PAGE = 256
RETRY_S = 1.0
CLOSE_TIMEOUT_S = 5.0


class FellBehind(RuntimeError):
    """The stream was trimmed past entries this replica had not applied: it must start again from its base index."""


class CatalogSync:
    """Keeps one replica's store in step with the shared stream; `attach` once the base index is loaded."""

    def __init__(self, redis_url: str, prefix: str, metrics: Metrics, password: str | None = None,
                 snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self.prefix = prefix
        self.metrics = metrics
        self.snapshot_every = snapshot_every
        self.redis = aioredis.Redis.from_url(
            redis_url, password=password, socket_timeout=WATCH_BLOCK_MS / 1000 + 5, socket_connect_timeout=2
        )
        self.store: ItemStore | None = None
        self.norm_bound: float | None = None
        """The longest vector an entry may add (`norm_bound_of` the base index, measured when attached)."""
        self.overlay = Overlay(frozenset())
        self.key = ""
        self.last_id = "0-0"
        self.since_snapshot = 0
        self.behind = False
        """Set when the stream was trimmed past this replica (`FellBehind`): the state reloads the base index."""
        self._apply_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def snapshot_key(self) -> str:
        return f"{self.key}:snapshot"

    async def attach(self, store: ItemStore) -> None:
        """Apply the latest snapshot and every change after it to this base index, then watch for new ones (raises
        if Redis fails or the snapshot is unusable)."""
        self.store, self.key, self.last_id = store, f"{self.prefix}catalog:{store.manifest.version_id}", "0-0"
        self.overlay, self.since_snapshot, self.behind = Overlay(frozenset(store.catalog.ids())), 0, False
        self.norm_bound = await asyncio.to_thread(norm_bound_of, store)
        fields = await self.redis.hgetall(self.snapshot_key)
        if fields:
            snapshot = Snapshot.from_fields(fields, store.manifest.dim, self.norm_bound)
            await asyncio.to_thread(self._restore, store, snapshot)
        await self.catch_up()
        if self._watcher is None or self._watcher.done():  # done: it stopped when this replica fell behind
            self._watcher = asyncio.create_task(self._watch(), name="catalog-sync")
        log.info("catalog sync on %s: %d items after replay (version %d)", self.key, len(store), store.manifest.version)

    async def publish(self, change: CatalogChange) -> Manifest:
        """Append `change` to the stream and apply the stream up to it here; returns the resulting manifest. Every
        `snapshot_every` entries, snapshot the catalog and trim the stream behind it."""
        store = self._attached()
        await self.redis.xadd(self.key, change.to_fields())
        await self.catch_up()
        manifest = store.manifest
        if self.since_snapshot >= self.snapshot_every:
            try:
                await self.snapshot()
            except RedisError as exc:  # the change is published and applied; the next publish tries again
                log.warning("catalog sync: could not write a snapshot of %s (%s: %s)", self.key, type(exc).__name__,
                            exc)
        return manifest

    async def catch_up(self) -> None:
        """Apply every stream entry after the last one applied, in order; raises `FellBehind` when a snapshot
        beyond the last entry applied here shows that the entries in between were trimmed."""
        store = self._attached()
        async with self._apply_lock:
            while True:
                async with self.redis.pipeline(transaction=True) as pipe:  # the snapshot mark and the page at once
                    pipe.hget(self.snapshot_key, "last_id")
                    pipe.xrange(self.key, min=f"({self.last_id}", count=PAGE)
                    snapshot_id, entries = await pipe.execute()
                if snapshot_id is not None and stream_id_key(snapshot_id.decode()) > stream_id_key(self.last_id):
                    self.behind = True
                    raise FellBehind(f"{self.key} was trimmed past entry {self.last_id} (snapshot at "
                                     f"{snapshot_id.decode()}); reloading the base index")
                for entry_id, fields in entries:
                    await asyncio.to_thread(self._apply, store, entry_id.decode(), fields)
                    self.last_id = entry_id.decode()
                    self.since_snapshot += 1
                if len(entries) < PAGE:
                    break
        self.metrics.index_items.set(len(store))

    async def snapshot(self) -> None:
        """Write the catalog as of the last entry applied here and trim the stream up to that entry, in one
        transaction; a newer snapshot written meanwhile by another replica wins (`service.catalog_snapshot`)."""
        store = self._attached()
        async with self._apply_lock:
            snapshot = Snapshot.of(self.overlay, self.last_id, store.manifest.version)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(self.snapshot_key)
                current = await pipe.hget(self.snapshot_key, "last_id")
                if current is not None and stream_id_key(current.decode()) >= stream_id_key(snapshot.last_id):
                    return
                pipe.multi()
                pipe.delete(self.snapshot_key)
                pipe.hset(self.snapshot_key, mapping=snapshot.to_fields())
                pipe.xtrim(self.key, minid=after(snapshot.last_id))
                await pipe.execute()
        except WatchError:
            return
        self.since_snapshot = 0
        log.info("catalog sync: snapshot of %s at %s (version %d); stream trimmed", self.key, snapshot.last_id,
                 snapshot.version)

    async def close(self) -> None:
        """Stop watching and close the connection; bounded, so a shutdown never hangs on Redis."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait({self._watcher}, timeout=CLOSE_TIMEOUT_S)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), CLOSE_TIMEOUT_S)

    def problem(self) -> str | None:
        """Why this replica no longer follows the shared catalog (its watcher stopped), or None."""
        if self.behind:
            return "catalog sync fell behind the trimmed stream; reloading the base index"
        watcher = self._watcher
        if watcher is None or not watcher.done():
            return None
        cause = "it was cancelled" if watcher.cancelled() else repr(watcher.exception())
        return f"catalog sync stopped watching the shared changes ({cause}); restart the replica"

    def _apply(self, store: ItemStore, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Apply one entry; one that cannot be applied is skipped, counted and logged (by every replica alike, so
        they stay equal). Runs in a worker thread."""
        try:
            change = CatalogChange.from_fields(fields, store.manifest.dim, self.norm_bound)
            apply_change(store, change)
            self.overlay.record(change)
        except BadEntry as exc:
            self._skip(entry_id, exc.reason, exc)
        except (ValueError, TypeError, KeyError) as exc:  # the store refused it, e.g. an empty id or a zero vector
            self._skip(entry_id, "rejected", exc)

    def _restore(self, store: ItemStore, snapshot: Snapshot) -> None:
        """Apply a snapshot to the base index just loaded: its items, its removals, its version. Worker thread."""
        changes = ([snapshot.add] if snapshot.add is not None else []) + [
            CatalogChange("remove", item_id=item_id) for item_id in snapshot.removed]
        for change in changes:
            apply_change(store, change)
            self.overlay.record(change)
        store.at_version(snapshot.version)
        self.last_id = snapshot.last_id

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
            except FellBehind as exc:
                log.warning("catalog sync: %s", exc)
                return  # the state reloads the base index and attaches again
            except Exception:
                log.exception("catalog sync: unexpected error while following %s; retrying", self.key)
                await asyncio.sleep(RETRY_S)


def apply_change(store: ItemStore, change: CatalogChange) -> None:
    if change.op == "add":
        store.add_items(list(change.items), change.vectors, upsert=True)
        return
    with contextlib.suppress(UnknownItemError):  # removed twice (two admins at once): the first one counts
        store.remove_item(str(change.item_id))
