"""Hot-adding and removing items behind the /admin routes (docs/design.md section 3).

Each new item is encoded (in a worker thread: its content rows through the item table's g when the service has a
table, else the model's raw item state, `AppState.item_vectors`), added to the store (write
lock: searchable when the call returns), and the store is saved as a new version folder (atomic, fsynced), so
the change survives a restart; every change bumps `index_version`. Upserting an id keeps its rating statistics,
which come from interaction data, not from the admin. Encoding has no deadline and no fallback (about 6
items/s for SmolLM2 on 2 CPU cores; it holds the engine, so large batches are better sent off-peak); an engine
that fails to encode is a 503 and nothing is added.

A change is saved and live, or neither: admin writes run one at a time, and when the save fails (a full disk,
an I/O error) the served store is reloaded from disk, which still holds the previous version, and the call
answers 503 (a save that failed only after its commit point, the CURRENT file, reloads with the change and
answers 200). The retry then succeeds instead of meeting its own half-made change (409).

With `REASONREC_CATALOG_SYNC=true` (several gateway replicas) a change is not saved to the index folder but
published to the shared Redis stream of `service.catalog_sync`, which every replica applies (this one before
answering); a Redis failure then answers 503 and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np
from redis.exceptions import RedisError

from indexer.core.catalog import PLACED_BY_TEXT, Catalog, Item
from indexer.errors import DuplicateItemError, UnknownItemError
from indexer.manifest import Manifest
from indexer.store import ItemStore
from service.catalog_sync import FellBehind
from service.catalog_sync_entries import CatalogChange
from service.errors import ApiError
from service.schemas import AddItemsResponse, NewItem, RemoveItemResponse
from service.state import AppState

log = logging.getLogger(__name__)


def check_new_ids(items: Sequence[NewItem], catalog: Catalog, upsert: bool) -> None:
    """422 for an id repeated within the call, 409 for a known id without upsert; both name the entry."""
    seen: set[str] = set()
    for position, item in enumerate(items):
        param = f"items[{position}].item_id"
        if item.item_id in seen:
            raise ApiError(422, f"{param}: item id {item.item_id!r} appears more than once in this call", param)
        seen.add(item.item_id)
        if not upsert and item.item_id in catalog:
            message = f"{param}: item id {item.item_id!r} is already indexed; send upsert=true to replace it"
            raise ApiError(409, message, param)


def to_item(new: NewItem, existing: Item | None) -> Item:
    return Item(
        item_id=new.item_id, title=new.title, genres=tuple(new.genres), year=new.year,
        avg_rating=existing.avg_rating if existing else None, rating_count=existing.rating_count if existing else 0,
        description=new.description, placement=PLACED_BY_TEXT,
    )


async def commit(state: AppState, write: Callable[[ItemStore], Manifest]) -> Manifest:
    """Apply `write` to the served store and save it, one admin write at a time; saved and live, or neither."""
    async with state.admin_lock:
        store = state.ready_store()
        manifest = await asyncio.to_thread(write, store)
        try:
            with state.metrics.stage("persist"):
                await asyncio.to_thread(store.save, state.index_dir)
        except Exception as exc:
            await revert_to_disk(state, manifest, exc)
        state.metrics.index_items.set(len(state.ready_store()))
        return manifest


async def revert_to_disk(state: AppState, unsaved: Manifest, exc: Exception) -> None:
    """After a failed save: serve what the disk holds again; 503 unless that is the version just saved."""
    log.error("could not save index version %s to %s: %r", unsaved.version_id, state.index_dir, exc)
    failure = f"the index could not be saved ({type(exc).__name__}: {exc})"
    try:
        saved = await asyncio.to_thread(ItemStore.load, state.index_dir, state.engine.fingerprint)
    except Exception:
        log.exception("cannot reload the index after a failed save; the unsaved change is served until a restart")
        raise ApiError(503, f"{failure}, nor reloaded; the change is served until a restart") from exc
    state.replace_store(saved)
    if saved.manifest.version_id != unsaved.version_id:
        raise ApiError(503, f"{failure}; the change was not made, retry later") from exc


async def encode(state: AppState, items: Sequence[Item]) -> np.ndarray:
    """What the index holds for `items` (`AppState.item_vectors`: the table's content rows, else the raw states);
    503 when the engine fails (nothing is changed)."""
    with state.metrics.stage("encode_item"):
        try:
            return await asyncio.to_thread(state.item_vectors, items)
        except Exception as exc:
            log.exception("the engine could not encode %d new item(s)", len(items))
            raise ApiError(503, f"the engine could not encode the items ({type(exc).__name__}); nothing was "
                           "added, retry later") from exc


async def publish(state: AppState, change: CatalogChange) -> Manifest:
    """Catalog sync: append the change to the shared stream and apply it here; 503 when Redis fails."""
    assert state.sync is not None
    with state.metrics.stage("persist"):
        try:
            return await state.sync.publish(change)
        except (RedisError, OSError) as exc:
            raise ApiError(
                503, f"the shared catalog (Redis) is unavailable ({type(exc).__name__}); retry later") from exc
        except FellBehind as exc:  # published, but this replica must reload before it can show the result
            raise ApiError(503, "this replica fell behind the shared catalog and is reloading it; the change was "
                           "published, retry with upsert") from exc


async def add_items(state: AppState, store: ItemStore, new_items: Sequence[NewItem], upsert: bool) -> AddItemsResponse:
    catalog = store.catalog
    check_new_ids(new_items, catalog, upsert)
    items = [to_item(new, catalog.get(new.item_id)) for new in new_items]
    vectors = await encode(state, items)
    if state.sync is not None:
        manifest = await publish(state, CatalogChange("add", tuple(items), vectors))
        return AddItemsResponse(added=len(items), index_version=manifest.version)

    def write(served: ItemStore) -> Manifest:
        try:
            return served.add_items(items, vectors, upsert=upsert)
        except DuplicateItemError as exc:  # added by a concurrent call since the check above
            raise ApiError(409, str(exc), "items") from exc

    manifest = await commit(state, write)
    if state.items_added is not None:
        state.items_added()
    return AddItemsResponse(added=len(items), index_version=manifest.version)


async def remove_item(state: AppState, store: ItemStore, item_id: str) -> RemoveItemResponse:
    if state.sync is not None and item_id in store.catalog:
        manifest = await publish(state, CatalogChange("remove", item_id=item_id))
        return RemoveItemResponse(removed=item_id, index_version=manifest.version)

    def write(served: ItemStore) -> Manifest:
        try:
            return served.remove_item(item_id)
        except UnknownItemError as exc:
            raise ApiError(404, f"item_id: unknown item id {item_id!r}", "item_id") from exc

    manifest = await commit(state, write)
    return RemoveItemResponse(removed=item_id, index_version=manifest.version)
