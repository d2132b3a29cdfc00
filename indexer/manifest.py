"""The index manifest: which model built an index version, its shape, and the check that a loaded index fits the model.

Item vectors are only comparable with user vectors from the same model, adapter and prompt template
(docs/design.md section 2), so every saved index version carries the `ModelFingerprint` that encoded it and
loading refuses an index whose fingerprint differs from the serving model's.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Literal, get_args

from indexer.core.fingerprint import ManifestMismatchError, ModelFingerprint

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)


def check_table(manifest: Manifest, expected: str | None, where: str = "the index") -> None:
    """Raise `ManifestMismatchError` when the index holds the rows of another item table than `expected` (its
    hash; None = no table: the raw states of the model)."""
    if manifest.table != expected:
        raise ManifestMismatchError("table", manifest.table, expected, where)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version_id(version: int) -> str:
    return f"v{version:06d}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Manifest:
    """One index version, stored as manifest.json in its folder; a change makes a new manifest (`bumped`)."""

    fingerprint: ModelFingerprint
    dim: int
    """Vector dimension (the model's hidden size)."""
    count: int
    """Number of items in the index."""
    kind: IndexKind
    """FAISS index kind: "flat" (exact), "ivf" or "hnsw"."""
    centered: bool
    """Whether a stored mean item vector is subtracted from items and queries before normalizing."""
    version: int
    """Monotonic version number, bumped by every change."""
    version_id: str
    """Unique name of this version and of its folder, e.g. "v000003-1a2b3c4d"."""
    created_at: str
    """When this version was made (ISO 8601, UTC)."""
    dataset: str | None = None
    """The dataset the catalog came from, when known."""
    metric: str = "cosine"
    """"cosine" (raw language-model states) or "ip" (item-table rows [v, b], `model.networks.item_table`)."""
    table: str | None = None
    """Hash of the item-table artifact whose rows the index holds (metric "ip"); None for raw states."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"manifest kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.dim <= 0 or self.count < 0 or self.version < 1:
            raise ValueError(
                f"manifest needs dim > 0, count >= 0, version >= 1; got {self.dim}, {self.count}, {self.version}"
            )

    @classmethod
    def first(
        cls, fingerprint: ModelFingerprint, *, dim: int, count: int, kind: IndexKind, centered: bool,
        dataset: str | None = None, metric: str = "cosine", table: str | None = None,
    ) -> Manifest:
        """The manifest of a freshly built index (version 1)."""
        return cls(fingerprint, dim, count, kind, centered, 1, _version_id(1), _now(), dataset, metric, table)

    def bumped(self, *, count: int) -> Manifest:
        """The manifest of the next version, after a change that leaves `count` items."""
        version = self.version + 1
        return replace(self, count=count, version=version, version_id=_version_id(version), created_at=_now())

    def at_version(self, version: int) -> Manifest:
        """The same index labelled as `version` (a replica restoring a catalog snapshot takes its version)."""
        return replace(self, version=version, version_id=_version_id(version))

    def to_json(self) -> dict:
        return {**asdict(self), "fingerprint": self.fingerprint.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**{**values, "fingerprint": ModelFingerprint.from_json(data["fingerprint"])})
