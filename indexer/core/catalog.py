"""The item catalog: one `Item` type for every dataset, keyed by a string item id, persisted as JSON lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

PLACED_BY_TEXT = "text"
"""The placement of an item added through the admin API: its vector is read from its text alone."""


@dataclass(frozen=True)
class Item:
    """One recommendable item; every field but the id and title is optional."""

    item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    avg_rating: float | None = None
    rating_count: int = 0
    description: str | None = None
    placement: str | None = None
    """How a hot-added item's vector was placed (`PLACED_BY_TEXT`, or by its text and simulated users' answers);
    None: the vector of the index as built. Written only when set, so built catalogs stay as they were."""

    def to_json(self) -> dict:
        # built field by field: dataclasses.asdict deep-copies and was most of the cost of saving a catalog
        data = {f.name: getattr(self, f.name) for f in fields(self)} | {"genres": list(self.genres)}
        if self.placement is None:
            del data["placement"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Item:
        return cls(**{**data, "genres": tuple(data.get("genres") or ())})


@dataclass
class Catalog:
    """Items in insertion order, looked up by id."""

    items: dict[str, Item] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Iterable[Item]) -> Catalog:
        catalog = cls()
        for item in items:
            if item.item_id in catalog.items:
                raise ValueError(f"duplicate item id {item.item_id!r} in catalog")
            catalog.items[item.item_id] = item
        return catalog

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> Item:
        return self.items[item_id]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items.values())

    def get(self, item_id: str) -> Item | None:
        return self.items.get(item_id)

    def ids(self) -> list[str]:
        return list(self.items)

    def save(self, path: Path) -> None:
        """Write as JSON lines to a temporary name, then rename, so a reader never sees half a file."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for item in self.items.values():
                f.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        items = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    items.append(Item.from_json(json.loads(line)))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise ValueError(f"{path}:{line_no}: not a catalog item: {exc}") from exc
        return cls.of(items)
