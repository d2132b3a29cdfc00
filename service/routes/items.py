"""Items: GET /items?q= (catalog search by title) and GET /items/{item_id} (public), POST /admin/items and
DELETE /admin/items/{item_id} (bearer token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.admin import add_items, remove_item
from service.deps import Admin, Slot, State, Store
from service.errors import ApiError
from service.schemas import (
    MAX_ID_CHARS,
    MAX_K,
    MAX_TITLE_CHARS,
    AddItemsRequest,
    AddItemsResponse,
    ItemOut,
    ItemSearchResponse,
    RemoveItemResponse,
    error_responses,
)

router = APIRouter(tags=["items"])

ItemIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="Catalog item id.")]


@router.get("/items", response_model=ItemSearchResponse, responses=error_responses(422, 503))
async def search_items(
    store: Store,
    q: Annotated[str, Query(min_length=1, max_length=MAX_TITLE_CHARS, description="Words of the title, any case.")],
    limit: Annotated[int, Query(ge=1, le=MAX_K, description="Most items to return.")] = 20,
) -> ItemSearchResponse:
    """Catalog items whose title (or id) holds every word of `q`, most rated first: what a person picks a history
    from (the /try page does). A scan of the catalog: a millisecond for MovieLens' thousands of items."""
    words = q.casefold().split()
    if not words:
        raise ApiError(422, "q: must hold a word, not only whitespace", "q")
    found = [item for item in store.catalog
             if all(word in f"{item.title} ({item.year}) {item.item_id}".casefold() for word in words)]
    found.sort(key=lambda item: (-item.rating_count, item.title))
    return ItemSearchResponse(items=[ItemOut(**item.to_json()) for item in found[:limit]], total=len(found))


@router.get("/items/{item_id:path}", response_model=ItemOut, responses=error_responses(404, 422, 503))
async def get_item(item_id: ItemIdPath, store: Store) -> ItemOut:
    item = store.get(item_id)
    if item is None:
        raise ApiError(404, f"item_id: unknown item id {item_id!r}", "item_id")
    return ItemOut(**item.to_json())


@router.post(
    "/admin/items", response_model=AddItemsResponse, dependencies=[Admin, Slot],
    responses=error_responses(400, 401, 403, 409, 413, 422, 429, 503),
)
async def post_items(body: AddItemsRequest, state: State, store: Store) -> AddItemsResponse:
    """Encode and index new items; searchable when this returns, persisted, `index_version` bumped."""
    return await add_items(state, store, body.items, body.upsert)


@router.delete(
    "/admin/items/{item_id:path}", response_model=RemoveItemResponse, dependencies=[Admin, Slot],
    responses=error_responses(401, 403, 404, 422, 429, 503),
)
async def delete_item(item_id: ItemIdPath, state: State, store: Store) -> RemoveItemResponse:
    return await remove_item(state, store, item_id)
