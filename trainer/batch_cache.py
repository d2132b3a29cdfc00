"""A disk cache for slow batched model calls of the jobs (LLM user vectors, item vectors, ratings), so an
interrupted job resumes where it stopped instead of starting over; and the language model's item states through it.

One `.npy` file per batch, named by a hash of a namespace (model fingerprint, mode, settings) and the batch's
input texts; written atomically. Without a folder nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.core.catalog import Item
from model.engines.base import Engine
from model.prompts import item_prompt


class BatchCache:
    def __init__(self, folder: Path | None, namespace: dict) -> None:
        self.folder = folder
        self.namespace = json.dumps(namespace, sort_keys=True, default=str)
        self.hits = 0
        """Batches answered from disk."""
        self.misses = 0
        """Batches computed (and then stored)."""

    def get_or_compute(self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """`compute(texts)` (an array with one row per text), from the cache when this batch was done before."""
        if self.folder is None:
            self.misses += 1
            return np.asarray(compute(list(texts)))
        digest = hashlib.sha256("\x00".join([self.namespace, *texts]).encode()).hexdigest()[:32]
        path = self.folder / f"{digest}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        result = np.asarray(compute(list(texts)))
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, result)
        tmp.replace(path)
        return result


def item_state_cache(folder: Path, engine: Engine) -> BatchCache:
    """The cache of `engine`'s item states under a feature folder (the item-table job and the evaluation share it)."""
    return BatchCache(folder / "llm-items", {"items": engine.fingerprint.to_json()})


def item_states(items: Sequence[Item], engine: Engine, cache: BatchCache, batch_size: int = 16,
                desc: str = "item states") -> np.ndarray:
    """The language model's raw item states (n, hidden) of `items` (their item prompts), batch by batch through
    `cache`, with a progress bar."""
    vectors = [np.zeros((0, engine.hidden_size), dtype=np.float32)]
    for first in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch"):
        prompts = [item_prompt(item) for item in items[first : first + batch_size]]
        vectors.append(cache.get_or_compute(prompts, engine.embed_items))
    return np.concatenate(vectors)
