"""The FAISS item index: cosine or inner-product search over item vectors keyed by string item ids, safe to share
between threads.

Metric "cosine" (the language model's raw states, docs/design.md section 2): vectors are L2-normalized and searched
by inner product. Metric "ip": vectors are searched as they are (the item table's [v, b] rows, whose inner product
with [u, 1] is the ranker's score u . v + b).
The default kind "flat" is `IndexIDMap2(IndexFlatIP)`, exact. For large catalogs, "ivf" (`IndexIVFFlat`, inner
product, trained on the vectors given to `build`, `nprobe` lists searched) and "hnsw" (`IndexHNSWFlat`, inner
product) are approximate. FAISS cannot remove from an HNSW graph, so removing (or upserting) an item in an
"hnsw" index rebuilds the graph from the stored vectors: O(n log n), fine for rare admin deletes.

Optional centering: item vectors from a language model are strongly anisotropic (mean pairwise cosine 0.96), so
a fixed `center` (the mean item vector at build time) can be subtracted from items *and* queries before
normalizing. The center never changes afterwards: hot-added items and user queries use the same stored mean.

String ids map to int64 FAISS ids that are never reused, so a removed item's number cannot come back as
another item. Searches share a read lock and run in parallel (FAISS releases the GIL); writes are exclusive.
When many threads search at once on few cores, FAISS's own OpenMP threads oversubscribe them: a server may want
`faiss.omp_set_num_threads(1)` (4k x 576 flat, 1 query, 2 busy cores: 0.4 ms instead of 7.5 ms).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import faiss
import numpy as np

from indexer.core.durable import fsync_file, write_json
from indexer.errors import CorruptIndexError, DuplicateItemError, UnknownItemError, show_ids
from indexer.index_files import read_center, read_faiss, read_meta
from indexer.manifest import INDEX_KINDS, IndexKind
from indexer.rwlock import ReadWriteLock

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
CENTER_FILE = "center.npy"

SearchResult = list[tuple[str, float]]
Metric = Literal["cosine", "ip"]
METRICS: tuple[str, ...] = get_args(Metric)


@dataclass(frozen=True)
class IndexOptions:
    """Settings of the approximate kinds; "flat" ignores them."""

    nlist: int | None = None
    """IVF: number of lists; None picks ~4*sqrt(n), keeping at least 39 training vectors per list."""
    nprobe: int = 16
    """IVF: lists searched per query (more: better recall, slower)."""
    hnsw_m: int = 32
    """HNSW: neighbours per node."""
    ef_construction: int = 200
    """HNSW: beam width while building."""
    ef_search: int = 128
    """HNSW: beam width while searching (raised to the number of results wanted when that is larger)."""

    def __post_init__(self) -> None:
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"IndexOptions.nlist must be >= 1 or None, got {self.nlist}")


def default_nlist(n: int) -> int:
    return max(1, min(round(4 * n**0.5), n // 39))


def _empty_faiss(kind: IndexKind, dim: int, options: IndexOptions, nlist: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = options.ef_construction
        hnsw.hnsw.efSearch = options.ef_search
        return faiss.IndexIDMap2(hnsw)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = options.nprobe
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct(id) and remove_ids by id
    return ivf


def _check_kind(kind: str) -> None:
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")


class ItemIndex:
    """Cosine search over item vectors by string id. Build with `ItemIndex.build` (or the constructor for an
    empty "flat"/"hnsw" index), persist with `save`/`load` (normally through `indexer.store.ItemStore`)."""

    def __init__(
        self, dim: int, *, kind: IndexKind = "flat", center: np.ndarray | None = None,
        options: IndexOptions | None = None, metric: Metric = "cosine",
    ) -> None:
        _check_kind(kind)
        if dim < 1:
            raise ValueError(f"index dim must be >= 1, got {dim}")
        if metric not in METRICS or (metric == "ip" and center is not None):
            raise ValueError(f"index metric must be one of {METRICS} (no center with ip), got {metric!r}")
        self.dim = dim
        self.metric: Metric = metric
        self.kind: IndexKind = kind
        self.options = options or IndexOptions()
        self.center = None if center is None else self._checked_center(center)
        # Any: FAISS's SWIG classes (IndexIDMap2, IndexIVFFlat, ...) are not covered by its type stubs
        self._faiss: Any = _empty_faiss(kind, dim, self.options, nlist=self.options.nlist or 1)
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._next_id = 0
        self._lock = ReadWriteLock()

    @classmethod
    def build(
        cls, item_ids: Sequence[str], vectors: np.ndarray, *, kind: IndexKind = "flat", center: bool = False,
        options: IndexOptions | None = None, metric: Metric = "cosine",
    ) -> ItemIndex:
        """Index `vectors` (n, dim) under `item_ids`; `center` stores their mean; "ivf" trains on them."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"item vectors must be a 2-D array (n, dim), got shape {x.shape}")
        if center and len(x) < 2:
            raise ValueError(f"centering needs at least 2 item vectors for their mean, got {len(x)}; pass center=False")
        index = cls(x.shape[1], kind=kind, center=x.mean(axis=0, dtype=np.float64) if center else None,
                    options=options, metric=metric)
        if kind == "ivf":
            index._train_ivf(index._prepare(x, "item vectors", item_ids))
        index.add(item_ids, x)
        return index

    def _checked_center(self, center: np.ndarray) -> np.ndarray:
        c = np.array(center, dtype=np.float32)
        if c.shape != (self.dim,) or not np.isfinite(c).all():
            raise ValueError(f"center must be a finite vector of shape ({self.dim},), got shape {c.shape}")
        c.setflags(write=False)
        return c

    def _train_ivf(self, x: np.ndarray) -> None:
        nlist = self.options.nlist or default_nlist(len(x))
        if len(x) < nlist:
            raise ValueError(f"an IVF index with nlist={nlist} needs at least {nlist} training vectors, got {len(x)}")
        self._faiss = _empty_faiss("ivf", self.dim, self.options, nlist)
        self._faiss.train(x)

    @property
    def centered(self) -> bool:
        return self.center is not None

    # ---- vectors in, vectors out -------------------------------------------------------------------------

    def _prepare(self, vectors: np.ndarray, what: str, names: Sequence[str] | None = None) -> np.ndarray:
        """Check shape and values; for cosine subtract the center and L2-normalize; a new float32 C-contiguous
        array."""
        x = np.array(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (n, {self.dim}), got {x.shape}")
        self._reject_rows(~np.isfinite(x).all(axis=1), f"{what} contain NaN or infinite values", names)
        if self.metric == "ip":
            return np.ascontiguousarray(x)
        if self.center is not None:
            x -= self.center
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        zero_length = f"{what} have zero length" + (" after centering" if self.centered else "")
        self._reject_rows(norms[:, 0] == 0, zero_length, names)
        return np.ascontiguousarray(x / norms, dtype=np.float32)

    def searchable(self, query: np.ndarray) -> bool:
        """Whether one query vector can be searched: shape (dim,), finite, and not zero (once centered)."""
        try:
            self._prepare(np.asarray(query).reshape(1, -1), "query")
        except ValueError:
            return False
        return True

    @staticmethod
    def _reject_rows(bad: np.ndarray, problem: str, names: Sequence[str] | None) -> None:
        if not bad.any():
            return
        rows = np.flatnonzero(bad).tolist()
        where = f"rows {rows[:10]}"
        if names is not None and len(names) == len(bad):
            where += f" (item ids {show_ids([names[r] for r in rows])})"
        raise ValueError(f"{problem} at {where}")

    # ---- writes --------------------------------------------------------------------------------------------

    def add(self, item_ids: Sequence[str], vectors: np.ndarray, *, upsert: bool = False) -> None:
        """Add vectors (n, dim) under string ids, all or none; `upsert` replaces the vectors of known ids."""
        item_ids = list(item_ids)
        bad_ids = [i for i in item_ids if not isinstance(i, str) or not i]
        if bad_ids:
            raise ValueError(f"item ids must be non-empty strings, got {bad_ids[:10]!r}")
        x = self._prepare(vectors, "item vectors", item_ids)
        if len(item_ids) != len(x):
            raise ValueError(f"got {len(item_ids)} item ids but {len(x)} vectors")
        if self.kind == "ivf" and not self._faiss.is_trained:
            raise ValueError("an IVF index must be trained before adding: create it with ItemIndex.build(...)")
        with self._lock.write():
            self._check_new(item_ids, upsert)
            self._remove_known([i for i in item_ids if i in self._int_of])
            ints = np.arange(self._next_id, self._next_id + len(x), dtype=np.int64)
            if len(x):
                self._faiss.add_with_ids(x, ints)
            self._next_id += len(x)
            for item_id, i in zip(item_ids, ints.tolist(), strict=False):
                self._int_of[item_id] = i
                self._str_of[i] = item_id

    def _check_new(self, item_ids: list[str], upsert: bool) -> None:
        repeated = [i for i, n in Counter(item_ids).items() if n > 1]
        existing = [] if upsert else [i for i in item_ids if i in self._int_of]
        if existing or repeated:
            raise DuplicateItemError(existing, repeated)

    def remove(self, item_ids: Iterable[str]) -> int:
        """Remove items by id (all or none); returns how many were removed."""
        unique = list(dict.fromkeys(item_ids))
        with self._lock.write():
            unknown = [i for i in unique if i not in self._int_of]
            if unknown:
                raise UnknownItemError(unknown)
            self._remove_known(unique)
        return len(unique)

    def _remove_known(self, item_ids: list[str]) -> None:
        """Drop known ids from FAISS and from the id maps; callers hold the write lock."""
        if not item_ids:
            return
        ints = np.array([self._int_of[i] for i in item_ids], dtype=np.int64)
        if self.kind == "hnsw":
            self._faiss = self._hnsw_without(ints)
        elif self._faiss.remove_ids(ints) != len(ints):
            raise RuntimeError(f"FAISS removed fewer vectors than asked for ids {show_ids(item_ids)}")
        for item_id in item_ids:
            del self._str_of[self._int_of.pop(item_id)]

    def _hnsw_without(self, drop: np.ndarray) -> faiss.Index:
        """A new HNSW index holding every stored vector except those with FAISS ids `drop`."""
        ints = faiss.vector_to_array(self._faiss.id_map)
        vectors = faiss.downcast_index(self._faiss.index).reconstruct_n(0, self._faiss.ntotal)
        keep = ~np.isin(ints, drop)
        fresh = _empty_faiss("hnsw", self.dim, self.options, nlist=1)
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(ints[keep]))
        return fresh

    # ---- reads ---------------------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
    ) -> list[SearchResult]:
        """Top-k (item id, cosine) per query row, best first, never an id from that row's `exclude`.

        Each row gets exactly min(k, items not excluded) results: the search over-fetches by the number of
        excluded ids in the index, and an approximate kind that still comes up short retries exhaustively.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = self._prepare(queries, "queries")
        if exclude is not None and len(exclude) != len(q):
            raise ValueError(f"exclude must hold one collection per query: {len(exclude)} for {len(q)} queries")
        if exclude is not None and any(isinstance(e, str) for e in exclude):
            raise TypeError("exclude must hold a collection of item ids per query, not a string")
        excluded = [set(e) for e in exclude] if exclude is not None else [set() for _ in range(len(q))]
        with self._lock.read():
            total = self._faiss.ntotal
            if total == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            hidden = [sum(1 for i in ex if i in self._int_of) for ex in excluded]
            fetch = min(k + max(hidden), total)
            results = self._search_rows(q, fetch, k, excluded, exhaustive=False)
            short = [r for r, res in enumerate(results) if len(res) < min(k, total - hidden[r])]
            if short and self.kind != "flat":
                retried = self._search_rows(q[short], fetch, k, [excluded[r] for r in short], exhaustive=True)
                for r, res in zip(short, retried, strict=False):
                    results[r] = res
            return results

    def _search_rows(
        self, q: np.ndarray, fetch: int, k: int, excluded: list[set[str]], *, exhaustive: bool,
    ) -> list[SearchResult]:
        scores, ints = self._faiss.search(q, fetch, params=self._search_params(fetch, exhaustive))
        return [self._collect(s, i, ex, k) for s, i, ex in zip(scores.tolist(), ints.tolist(), excluded, strict=False)]

    def _collect(self, scores: list[float], ints: list[int], excluded: set[str], k: int) -> SearchResult:
        out: SearchResult = []
        for score, i in zip(scores, ints, strict=False):
            if i < 0 or self._str_of[i] in excluded:
                continue
            out.append((self._str_of[i], score))
            if len(out) == k:
                break
        return out

    def _search_params(self, fetch: int, exhaustive: bool) -> faiss.SearchParameters | None:
        """Per-call settings, so concurrent searches never write to the shared index."""
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=self._faiss.nlist if exhaustive else self.options.nprobe)
        if self.kind == "hnsw":
            ef = self._faiss.ntotal if exhaustive else self.options.ef_search
            return faiss.SearchParametersHNSW(efSearch=max(ef, fetch))
        return None

    def __len__(self) -> int:
        return len(self._int_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._int_of

    def ids(self) -> list[str]:
        """Indexed item ids, in the order they were (last) added."""
        with self._lock.read():
            return list(self._int_of)

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """The stored vectors (centered when centering is on, L2-normalized) of `item_ids`, shape (n, dim)."""
        with self._lock.read():
            unknown = [i for i in item_ids if i not in self._int_of]
            if unknown:
                raise UnknownItemError(unknown)
            out = np.zeros((len(item_ids), self.dim), dtype=np.float32)
            for row, item_id in enumerate(item_ids):
                out[row] = self._faiss.reconstruct(self._int_of[item_id])
            return out

    # ---- persistence ---------------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write index.faiss, index.json (id map and settings) and center.npy into `folder`, fsynced.

        Not atomic by itself: write into a fresh folder and rename it into place (as `ItemStore.save` does).
        """
        with self._lock.read():
            faiss.write_index(self._faiss, str(folder / INDEX_FILE))
            fsync_file(folder / INDEX_FILE)
            meta = {"kind": self.kind, "dim": self.dim, "metric": self.metric, "options": asdict(self.options),
                    "next_id": self._next_id, "ids": list(self._int_of.items())}
            write_json(folder / META_FILE, meta)
            if self.center is not None:
                with (folder / CENTER_FILE).open("wb") as f:
                    np.save(f, self.center)
                fsync_file(folder / CENTER_FILE)

    @classmethod
    def load(cls, folder: Path) -> ItemIndex:
        """Read what `save` wrote; raises `CorruptIndexError` naming the file when something is off."""
        meta = read_meta(folder / META_FILE)
        center = read_center(folder / CENTER_FILE) if (folder / CENTER_FILE).exists() else None
        try:
            index = cls(meta["dim"], kind=meta["kind"], center=center, options=IndexOptions(**meta["options"]),
                        metric=meta.get("metric", "cosine"))
        except (TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{folder / META_FILE} or {folder / CENTER_FILE}: {exc}") from exc
        index._faiss = read_faiss(folder / INDEX_FILE, meta["kind"], meta["dim"], len(meta["ids"]))
        index._int_of = {item_id: i for item_id, i in meta["ids"]}
        index._str_of = {i: item_id for item_id, i in meta["ids"]}
        index._next_id = meta["next_id"]
        unique = len(index._str_of) == len(index._int_of) == len(meta["ids"])
        if not unique or any(i >= index._next_id for i in index._str_of):
            raise CorruptIndexError(f"{folder / META_FILE}: the id map repeats an id or has one >= next_id")
        return index
