"""Turning a request's history into the `UserHistory` every ranker reads: catalog ids become their display
titles and genres, titles pass through.

Unknown item ids are a 422 naming the entry (`history[2].item_id`), so a typo never silently drops history.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexer.core.catalog import Catalog
from model.prompts import HistoryLine, UserHistory
from service.errors import ApiError
from service.schemas import HistoryEntry


def resolve_history(entries: Sequence[HistoryEntry], catalog: Catalog) -> UserHistory:
    unknown = [(i, e.item_id) for i, e in enumerate(entries) if e.item_id is not None and e.item_id not in catalog]
    if unknown:
        position, item_id = unknown[0]
        more = f" ({len(unknown) - 1} more unknown ids in the history)" if len(unknown) > 1 else ""
        raise ApiError(
            422,
            f"history[{position}].item_id: unknown item id {item_id!r}; send {{\"title\": ...}} for an item "
            f"that is not in the catalog{more}",
            param=f"history[{position}].item_id",
        )
    lines = []
    for entry in entries:
        if entry.item_id is not None:
            lines.append(HistoryLine.of_item(catalog[entry.item_id], entry.rating, entry.timestamp))
        else:
            assert entry.title is not None  # the schema guarantees exactly one of item_id and title
            lines.append(HistoryLine(entry.title, entry.rating, entry.timestamp))
    return UserHistory(tuple(lines), tuple(e.item_id for e in entries))
