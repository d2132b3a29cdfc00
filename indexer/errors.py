"""The indexer's exceptions, each naming what is wrong: the item ids involved, or the file on disk.

`ManifestMismatchError` (an index built by another model) lives in `indexer.manifest` beside the fingerprint.
"""

from __future__ import annotations

from collections.abc import Sequence


def show_ids(item_ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in item_ids[:limit])
    return shown if len(item_ids) <= limit else f"{shown}, ... ({len(item_ids)} in all)"


class DuplicateItemError(ValueError):
    """Adding ids that are already indexed (without upsert) or that repeat within one call."""

    def __init__(self, existing: Sequence[str], repeated: Sequence[str]) -> None:
        self.item_ids = sorted({*existing, *repeated})
        parts = []
        if existing:
            parts.append(f"already in the index: {show_ids(existing)} (pass upsert=True to replace them)")
        if repeated:
            parts.append(f"repeated within the call: {show_ids(repeated)}")
        super().__init__("duplicate item ids, " + "; ".join(parts))


class UnknownItemError(KeyError):
    """Ids that are not in the index."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        super().__init__(f"item ids not in the index: {show_ids(self.item_ids)}")

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class CorruptIndexError(ValueError):
    """Stored index files that are missing, unreadable or inconsistent with each other."""


class IndexNotFoundError(FileNotFoundError):
    """No index has been saved under the root folder."""
