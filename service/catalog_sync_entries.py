"""The entries of the shared catalog stream (`service.catalog_sync`): what one admin change looks like in Redis, and
the checks every entry passes before it reaches an index, whoever wrote it (a replica of another version during a
rolling upgrade, or anyone who reached Redis): fields and item values as `GET /items/{id}` answers them, vectors of
the index's size, finite and, for item-table rows, not longer than the base index's rows allow (`norm_bound_of`).
An entry that fails is skipped and counted under its `BadEntry.reason`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import ValidationError

from indexer.core.catalog import Item
from indexer.store import ItemStore
from service.schemas import ItemOut

log = logging.getLogger(__name__)


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
