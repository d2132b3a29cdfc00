"""Hot-adding and removing items behind the /admin routes (docs/design.md section 3).

Each new item is encoded (in a worker thread: its content rows through the item table's g when the service has a
table, else the model's raw item state, `AppState.item_vectors`), added to the store (write
lock: searchable when the call returns), and the store is saved as a new version folder (atomic, fsynced), so
the change survives a restart; every change bumps `index_version`. Upserting an id keeps its rating statistics,
which come from interaction data, not from the admin. Encoding has no deadline and no fallback (about 6
items/s for SmolLM2 on 2 CPU cores; it holds the engine, so large batches are better sent off-peak); an engine
failure here is a 500.

With `REASONREC_CATALOG_SYNC=true` (several gateway replicas) a change is not saved to the index folder but
published to the shared Redis stream of `service.catalog_sync`, which every replica applies (this one before
answering); a Redis failure then answers 503 and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.exceptions import RedisError

from indexer.catalog import Catalog, Item
from indexer.errors import DuplicateItemError, UnknownItemError
from indexer.manifest import Manifest
from indexer.store import ItemStore
from service.catalog_sync import CatalogChange
from service.errors import ApiError
from service.schemas import AddItemsResponse, NewItem, RemoveItemResponse
from service.state import AppState


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
        description=new.description,
    )


async def persist(state: AppState, store: ItemStore) -> None:
    with state.metrics.stage("persist"):
        await asyncio.to_thread(store.save, state.index_dir)
    state.metrics.index_items.set(len(store))


async def publish(state: AppState, change: CatalogChange) -> Manifest:
    """Catalog sync: append the change to the shared stream and apply it here; 503 when Redis fails."""
    assert state.sync is not None
    with state.metrics.stage("persist"):
        try:
            return await state.sync.publish(change)
        except (RedisError, OSError) as exc:
            raise ApiError(
                503, f"the shared catalog (Redis) is unavailable ({type(exc).__name__}); retry later") from exc


async def add_items(state: AppState, store: ItemStore, new_items: Sequence[NewItem], upsert: bool) -> AddItemsResponse:
    catalog = store.catalog
    check_new_ids(new_items, catalog, upsert)
    items = [to_item(new, catalog.get(new.item_id)) for new in new_items]
    with state.metrics.stage("encode_item"):
        vectors = await asyncio.to_thread(state.item_vectors, items)
    if state.sync is not None:
        manifest = await publish(state, CatalogChange("add", tuple(items), vectors))
        return AddItemsResponse(added=len(items), index_version=manifest.version)
    try:
        manifest = await asyncio.to_thread(store.add_items, items, vectors, upsert=upsert)
    except DuplicateItemError as exc:  # added by a concurrent call since the check above
        raise ApiError(409, str(exc), "items") from exc
    await persist(state, store)
    return AddItemsResponse(added=len(items), index_version=manifest.version)


async def remove_item(state: AppState, store: ItemStore, item_id: str) -> RemoveItemResponse:
    if state.sync is not None and item_id in store.catalog:
        manifest = await publish(state, CatalogChange("remove", item_id=item_id))
        return RemoveItemResponse(removed=item_id, index_version=manifest.version)
    try:
        manifest = await asyncio.to_thread(store.remove_item, item_id)
    except UnknownItemError as exc:
        raise ApiError(404, f"item_id: unknown item id {item_id!r}", "item_id") from exc
    await persist(state, store)
    return RemoveItemResponse(removed=item_id, index_version=manifest.version)
