"""Snapshots of the shared catalog stream (`service.catalog_sync`): what lets the stream be trimmed, so that a
replica that starts replays the catalog's present, not its whole history.

A snapshot is the net effect of every stream entry up to one (`last_id`) on the base index: the items added or
replaced (with their vectors) and the base items removed, and the index version the replicas had reached there.
It is one Redis hash beside the stream (`<stream key>:snapshot`). The replica that publishes a change writes a new
snapshot every `SNAPSHOT_EVERY` entries, and in the same transaction trims the stream up to and including
`last_id` (WATCH on the hash: of two replicas snapshotting at once, only the newer snapshot is written).

A replica applies the snapshot on its base index, then the entries after `last_id`. Because the entry `last_id`
itself is trimmed, a replica that has not applied it yet (one that fell behind while the snapshot was written, or
read an older snapshot a moment before) finds the snapshot's `last_id` beyond its own and knows that it missed
entries: it reloads its base index and starts again from the snapshot (`CatalogSync.catch_up`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from indexer.core.catalog import Item
from service.catalog_sync_entries import BadEntry, CatalogChange, parse_items, parse_vectors

SNAPSHOT_EVERY = 100
"""Stream entries between two snapshots: the most a starting replica replays beyond the snapshot (plus the
entries written meanwhile), and how often a publishing replica writes the whole overlay to Redis."""


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id ("1700000000000-3") as a sortable pair."""
    millis, _, sequence = stream_id.partition("-")
    return int(millis), int(sequence or 0)


def after(stream_id: str) -> str:
    """The smallest stream id greater than `stream_id` (XTRIM MINID keeps it and everything newer)."""
    millis, sequence = stream_id_key(stream_id)
    return f"{millis}-{sequence + 1}"


@dataclass
class Overlay:
    """What the stream has changed on the base index so far, kept up to date as entries are applied."""

    base_ids: frozenset[str]
    added: dict[str, tuple[Item, np.ndarray]] = field(default_factory=dict)
    """Items added or replaced, with the vector applied."""
    removed: set[str] = field(default_factory=set)
    """Base items removed."""

    def record(self, change: CatalogChange) -> None:
        """Note an applied change."""
        if change.op == "add":
            assert change.vectors is not None
            for item, vector in zip(change.items, change.vectors, strict=True):
                self.added[item.item_id] = (item, vector)
                self.removed.discard(item.item_id)
            return
        item_id = str(change.item_id)
        self.added.pop(item_id, None)
        if item_id in self.base_ids:
            self.removed.add(item_id)


@dataclass(frozen=True)
class Snapshot:
    """The overlay as of stream entry `last_id`, where the index version was `version`."""

    last_id: str
    version: int
    add: CatalogChange | None
    """All the added or replaced items at once (None: none)."""
    removed: tuple[str, ...]

    @classmethod
    def of(cls, overlay: Overlay, last_id: str, version: int) -> Snapshot:
        entries = list(overlay.added.values())
        add = None
        if entries:
            add = CatalogChange("add", tuple(item for item, _ in entries), np.stack([v for _, v in entries]))
        return cls(last_id, version, add, tuple(sorted(overlay.removed)))

    def to_fields(self) -> dict[str, bytes]:
        fields = {"last_id": self.last_id.encode(), "version": str(self.version).encode(),
                  "removed": json.dumps(list(self.removed)).encode()}
        if self.add is not None:
            fields.update({k: v for k, v in self.add.to_fields().items() if k != "op"})
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes], dim: int, norm_bound: float | None) -> Snapshot:
        """Parse and check a snapshot like a stream entry; raises `BadEntry` naming what is wrong."""
        try:
            last_id, version = fields[b"last_id"].decode(), int(fields[b"version"])
            stream_id_key(last_id)
            removed = json.loads(fields[b"removed"])
            if not isinstance(removed, list) or not all(isinstance(i, str) for i in removed):
                raise BadEntry("malformed", "removed must be a JSON list of item ids")
            add = None
            if b"items" in fields:
                items = parse_items(fields[b"items"])
                vectors = parse_vectors(fields[b"vectors"], fields[b"dim"], len(items), dim, norm_bound)
                add = CatalogChange("add", items, vectors)
        except BadEntry:
            raise
        except (KeyError, ValueError) as exc:
            raise BadEntry("malformed", f"snapshot: {type(exc).__name__}: {exc}") from exc
        return cls(last_id, version, add, tuple(removed))
