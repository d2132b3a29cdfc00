"""Reading an index folder's files back (`indexer.index.ItemIndex.load`): each reader checks what it reads and
raises `CorruptIndexError` naming the file, so a broken index is a clear "not ready", never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from indexer.errors import CorruptIndexError
from indexer.manifest import IndexKind


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        _ = (meta["kind"], meta["dim"], meta["options"], meta["next_id"], meta["ids"])
    except FileNotFoundError as exc:
        raise CorruptIndexError(f"missing index file {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CorruptIndexError(f"{path}: not an index id map ({exc!r})") from exc
    next_id, ids = meta["next_id"], meta["ids"]
    if type(next_id) is not int or next_id < 0 or not isinstance(ids, list) or not all(map(is_id_pair, ids)):
        raise CorruptIndexError(f"{path}: the id map must be a list of [item id, FAISS id >= 0] pairs and next_id "
                                "a count")
    return meta


def is_id_pair(pair: object) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] != "" \
        and type(pair[1]) is int and pair[1] >= 0


def read_center(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path}: not a center vector ({exc})") from exc


def is_kind(index: faiss.Index, kind: IndexKind) -> bool:
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return False
    if kind == "ivf":
        return isinstance(index, faiss.IndexIVFFlat)
    inner = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlat
    return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), inner)


def read_faiss(path: Path, kind: IndexKind, dim: int, count: int) -> faiss.Index:
    if not path.exists():
        raise CorruptIndexError(f"missing index file {path}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise CorruptIndexError(f"{path}: FAISS cannot read it ({exc})") from exc
    if not is_kind(index, kind):
        raise CorruptIndexError(f"{path}: a {type(index).__name__} is not an inner-product {kind!r} index")
    if index.d != dim or index.ntotal != count:
        raise CorruptIndexError(
            f"{path}: holds {index.ntotal} vectors of dim {index.d}, the id map says {count} of dim {dim}"
        )
    return index
