"""The item store: catalog + FAISS index + manifest behind one lock, saved as atomic, versioned folders.

This is what the service and the index job use. Layout under a root folder:

    root/CURRENT                       one line: the name of the live version folder
    root/versions/v000007-1a2b3c4d/    index.faiss, index.json (id map), center.npy (when centered),
                                       catalog.jsonl, manifest.json

`save` writes a version folder under a temporary name, fsyncs it, renames it into place, and only then
replaces CURRENT (write a temporary file, `os.replace`): a crash at any point leaves the previous version
loadable. It keeps the newest `keep` versions and deletes older ones. One process should save to a root at a
time; saves within a process are serialized. `load` checks the stored model fingerprint against the model
that will query the index (docs/design.md section 2: item and user vectors must come from the same model).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from indexer.core.catalog import Catalog, Item
from indexer.core.durable import fsync_dir, replace_text, write_json
from indexer.core.fingerprint import ModelFingerprint, check_fingerprint
from indexer.errors import CorruptIndexError, IndexNotFoundError
from indexer.index import IndexOptions, ItemIndex, SearchResult
from indexer.manifest import IndexKind, Manifest
from indexer.prior import log_count_prior, rerank_with_prior
from indexer.rwlock import ReadWriteLock

CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
CATALOG_FILE = "catalog.jsonl"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600  # a temporary folder this old is left over from a crashed save
_VERSION_NAME = re.compile(r"v(\d+)-[0-9a-z]+")


class ItemStore:
    """Catalog, index and manifest that change together. Make one with `create` or `load`."""

    def __init__(self, catalog: Catalog, index: ItemIndex, manifest: Manifest) -> None:
        _check_consistent(catalog, index, manifest)
        self._catalog = catalog  # replaced, never mutated, by writes: readers may keep a snapshot
        self._index = index
        self._manifest = manifest
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._last_prior: tuple[object, float, dict[str, float]] | None = None

    @classmethod
    def create(
        cls, catalog: Catalog, vectors: np.ndarray, fingerprint: ModelFingerprint, *, kind: IndexKind = "flat",
        center: bool = True, dataset: str | None = None, options: IndexOptions | None = None,
        table: str | None = None,
    ) -> ItemStore:
        """Index `vectors` (one row per catalog item, in catalog order) as version 1. With `table` (the hash of an
        item-table artifact) the rows are that table's [v, b] and are searched by plain inner product."""
        metric = "ip" if table is not None else "cosine"
        index = ItemIndex.build(catalog.ids(), vectors, kind=kind, center=center and table is None, options=options,
                                metric=metric)
        manifest = Manifest.first(fingerprint, dim=index.dim, count=len(index), kind=kind, centered=index.centered,
                                  dataset=dataset, metric=metric, table=table)
        return cls(Catalog(dict(catalog.items)), index, manifest)

    # ---- reads ---------------------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """A snapshot of the catalog; treat it as read-only (a later write makes a new one)."""
        return self._catalog

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def __len__(self) -> int:
        return len(self._catalog)

    def get(self, item_id: str) -> Item | None:
        return self._catalog.get(item_id)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
        popularity_prior: float = 0.0, counts: Mapping[str, int] | None = None,
        terms: Sequence[Mapping[str, float]] | None = None,
    ) -> list[SearchResult]:
        """Top-k (item id, score) per query row, best first, excluding each row's `exclude` ids. The score is the
        index's (cosine, or inner product for a table's rows), plus `popularity_prior` x log(1 + interaction
        count) when that weight is not 0 (`indexer.prior`; counts from `counts`, else each catalog item's
        `rating_count`), plus row i's `terms[i]` (an additive score >= 0 per item id; 0 for the others). Exact:
        the extra terms are bounded, so the candidates are fetched until no item left out could enter the top k."""
        with self._lock.read():
            if not popularity_prior and not any(terms or ()):
                return self._index.search(queries, k, exclude)
            prior = self._prior(popularity_prior, counts) if popularity_prior else {}
            if not any(terms or ()):
                return rerank_with_prior(lambda fetch: self._index.search(queries, fetch, exclude), prior, k,
                                         len(self._index))
            results: list[SearchResult] = []
            for row, term in enumerate(terms or ()):
                extra = dict(prior)
                for item_id, value in term.items():
                    extra[item_id] = extra.get(item_id, 0.0) + value
                query, excluded = queries[row : row + 1], None if exclude is None else [exclude[row]]
                results += rerank_with_prior(lambda fetch, q=query, e=excluded: self._index.search(q, fetch, e),
                                             extra, k, len(self._index))
            return results

    def _prior(self, weight: float, counts: Mapping[str, int] | None) -> dict[str, float]:
        """The prior of `indexer.prior.log_count_prior`, kept for the last (counts or catalog snapshot, weight)."""
        source = counts if counts is not None else self._catalog
        cached = self._last_prior
        if cached is None or cached[0] is not source or cached[1] != weight:
            counted = counts if counts is not None else {item.item_id: item.rating_count for item in self._catalog}
            cached = (source, weight, log_count_prior(counted, weight))
            self._last_prior = cached  # one assignment: concurrent readers see an old or a new tuple, never a mix
        return cached[2]

    def searchable(self, query: np.ndarray) -> bool:
        """Whether `query` (one user vector) can be searched: the right size, finite, not zero once centered."""
        return self._index.searchable(query)

    @property
    def center(self) -> np.ndarray | None:
        """The mean item vector subtracted from items and queries before normalizing (None: not centered)."""
        return self._index.center

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """The stored (normalized, centered if the index is) vectors of `item_ids`, shape (n, dim)."""
        with self._lock.read():
            return self._index.vectors_of(item_ids)

    # ---- writes --------------------------------------------------------------------------------------------

    def add_items(self, items: Sequence[Item], vectors: np.ndarray, *, upsert: bool = False) -> Manifest:
        """Add items with their vectors (all or none), searchable on return; `upsert` replaces known ids."""
        if not items:
            raise ValueError("add_items needs at least one item")
        with self._lock.write():
            self._index.add([item.item_id for item in items], vectors, upsert=upsert)
            self._catalog = Catalog({**self._catalog.items, **{item.item_id: item for item in items}})
            self._manifest = self._manifest.bumped(count=len(self._index))
            return self._manifest

    def remove_item(self, item_id: str) -> Manifest:
        """Remove one item; raises `UnknownItemError` when it is not there."""
        with self._lock.write():
            self._index.remove([item_id])
            self._catalog = Catalog({i: item for i, item in self._catalog.items.items() if i != item_id})
            self._manifest = self._manifest.bumped(count=len(self._index))
            return self._manifest

    def at_version(self, version: int) -> Manifest:
        """Label the current items as index version `version` (catalog sync restoring a snapshot: every replica
        reports the version the snapshot's writer had)."""
        with self._lock.write():
            self._manifest = self._manifest.at_version(version)
            return self._manifest

    # ---- persistence ---------------------------------------------------------------------------------------

    def save(self, root: Path, *, keep: int = 3) -> Path:
        """Persist the current version under `root` (see the module docstring); returns its folder."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        versions = Path(root) / VERSIONS_DIR
        versions.mkdir(parents=True, exist_ok=True)
        with self._save_lock:
            with self._lock.read():  # searches go on; writes wait until the snapshot is on disk
                manifest = self._manifest
                folder = versions / manifest.version_id
                if not folder.exists():
                    self._write_version(folder)
            replace_text(Path(root) / CURRENT_FILE, manifest.version_id + "\n")
            _prune(versions, keep, current=manifest.version_id)
        return folder

    def _write_version(self, folder: Path) -> None:
        tmp = folder.with_name(f"{TMP_PREFIX}{folder.name}-{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            self._index.save(tmp)
            self._catalog.save(tmp / CATALOG_FILE)
            write_json(tmp / MANIFEST_FILE, self._manifest.to_json())
            fsync_dir(tmp)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(folder.parent)

    @staticmethod
    def exists(root: Path) -> bool:
        """Whether `root` has a CURRENT file naming an existing version folder."""
        try:
            _current_folder(Path(root))
        except (IndexNotFoundError, CorruptIndexError):
            return False
        return True

    @classmethod
    def load(cls, root: Path, expect: ModelFingerprint | None = None) -> ItemStore:
        """Load the CURRENT version; with `expect`, raise `ManifestMismatchError` if another model built it."""
        folder = _current_folder(Path(root))
        manifest = _read_manifest(folder / MANIFEST_FILE)
        if expect is not None:
            check_fingerprint(manifest.fingerprint, expect, where=f"the index at {folder}")
        index = ItemIndex.load(folder)
        catalog = _read_catalog(folder / CATALOG_FILE)
        try:
            return cls(catalog, index, manifest)
        except ValueError as exc:
            raise CorruptIndexError(f"{folder}: {exc}") from exc


def _check_consistent(catalog: Catalog, index: ItemIndex, manifest: Manifest) -> None:
    if set(catalog.ids()) != set(index.ids()):
        missing = sorted(set(catalog.ids()) ^ set(index.ids()))[:10]
        raise ValueError(f"catalog and index hold different item ids (e.g. {missing})")
    stored = (manifest.count, manifest.dim, manifest.kind, manifest.centered, manifest.metric)
    actual = (len(index), index.dim, index.kind, index.centered, index.metric)
    if stored != actual:
        raise ValueError(f"manifest says (count, dim, kind, centered, metric) = {stored}, the index has {actual}")


def _version_number(name: str) -> int | None:
    match = _VERSION_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _current_folder(root: Path) -> Path:
    current = root / CURRENT_FILE
    if not current.is_file():
        raise IndexNotFoundError(f"no index at {root} (no {CURRENT_FILE} file); build one with `reasonrec index ...`")
    name = current.read_text(encoding="utf-8").strip()
    if _version_number(name) is None:
        raise CorruptIndexError(f"{current} names {name!r}, which is not a version folder name")
    folder = root / VERSIONS_DIR / name
    if not folder.is_dir():
        raise CorruptIndexError(f"{current} names {folder}, which does not exist")
    return folder


def _read_manifest(path: Path) -> Manifest:
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise CorruptIndexError(f"missing index file {path}") from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(f"{path}: not an index manifest ({exc!r})") from exc


def _read_catalog(path: Path) -> Catalog:
    try:
        return Catalog.load(path)
    except FileNotFoundError as exc:
        raise CorruptIndexError(f"missing index file {path}") from exc
    except ValueError as exc:
        raise CorruptIndexError(str(exc)) from exc


def _prune(versions: Path, keep: int, current: str) -> None:
    """Delete all but the newest `keep` version folders (never `current`) and stale temporary folders."""
    folders = sorted(
        (p for p in versions.iterdir() if p.is_dir() and _version_number(p.name) is not None),
        key=lambda p: (_version_number(p.name), p.name),
    )
    for old in folders[:-keep]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in versions.glob(TMP_PREFIX + "*"):
        if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)
