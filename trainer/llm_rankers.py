"""The language-model rankers as the evaluation harness sees them: `direct` (the assistant turn is just
`<answer>`) and `reasoning` (greedy reasoning up to `<answer>` or the token budget, the vector at the marker),
as DESIGN.md sections 2-3 define them and the service runs them: user prompt (up to the 20 most recent
history lines, ages relative to the target's time) -> engine -> `ItemStore.search` over every item, which
centers and normalizes the user vector with the index's stored mean; the history is excluded (and, with a
popularity prior, each item's score gets w x log(1 + its training interactions): `indexer.prior`).

`reencode_items` re-encodes some items of a loaded index from other item prompts, through the same hot-add
path the service uses (`ItemStore.add_items`, stored mean unchanged). The evaluation job uses it so that
item prompts carry only training-split rating statistics (e.g. cold items: none at all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.catalog import Catalog, Item
from indexer.store import ItemStore
from model.engine import Engine
from model.prompts import HistoryLine, display_title, item_prompt, user_prompt
from trainer.batch_cache import BatchCache
from trainer.splits import Example

LLM_MODES = ("direct", "reasoning")


def history_lines(example: Example, catalog: Catalog) -> list[HistoryLine]:
    """The example's history as prompt lines (display title, rating, timestamp), oldest first."""
    return [HistoryLine(display_title(catalog[x.item_id]), x.rating, x.timestamp) for x in example.history]


def example_prompt(example: Example, catalog: Catalog) -> str:
    """The service's user prompt for an example: its history, ages relative to the target's time."""
    return user_prompt(history_lines(example, catalog), now=example.target.timestamp)


class LlmRanker:
    """User vectors from the engine (cached on disk per batch), ranked by the item store."""

    def __init__(self, mode: str, engine: Engine, store: ItemStore, catalog: Catalog, candidates: Sequence[str],
                 reasoning_tokens: int = 64, cache_dir: Path | None = None, batch_size: int = 16,
                 popularity_prior: float = 0.0, counts: Mapping[str, int] | None = None) -> None:
        if mode not in LLM_MODES:
            raise ValueError(f"LLM ranker mode must be one of {', '.join(LLM_MODES)}, got {mode!r}")
        self.name = mode
        self.mode = mode
        self.engine = engine
        self.store = store
        self.catalog = catalog
        self.batch_size = batch_size
        self.reasoning_tokens = reasoning_tokens
        self.popularity_prior, self.counts = popularity_prior, counts
        self.column = {item_id: j for j, item_id in enumerate(candidates)}
        settings = {"reasoning_tokens": reasoning_tokens} if mode == "reasoning" else {}
        self.cache = BatchCache(cache_dir, {"mode": mode, "fingerprint": engine.fingerprint.to_json(), **settings})
        self.generated_tokens: list[int] = []
        self.wrote_marker: list[bool] = []

    def prompt(self, example: Example) -> str:
        return example_prompt(example, self.catalog)

    def _encode(self, prompts: list[str]) -> np.ndarray:
        """Vectors, plus (generated tokens, wrote marker) columns for reasoning."""
        if self.mode == "direct":
            return self.engine.embed_direct(prompts)
        out = self.engine.reason(prompts, self.reasoning_tokens)
        return np.hstack([np.stack([r.vector for r in out]),
                          np.array([[r.generated_tokens, r.wrote_marker] for r in out], dtype=np.float32)])

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        encoded = self.cache.get_or_compute([self.prompt(e) for e in examples], self._encode)
        vectors = encoded[:, : self.engine.hidden_size]
        if self.mode == "reasoning":
            self.generated_tokens += encoded[:, -2].astype(int).tolist()
            self.wrote_marker += encoded[:, -1].astype(bool).tolist()
        results = self.store.search(vectors, k=len(self.store), exclude=[{x.item_id for x in e.history}
                                                                          for e in examples],
                                    popularity_prior=self.popularity_prior, counts=self.counts)
        out = np.full((len(examples), len(self.column)), -np.inf)
        for row, ranked in enumerate(results):
            for item_id, score in ranked:
                if item_id in self.column:
                    out[row, self.column[item_id]] = score
        return out

    def stats(self) -> dict:
        """Batches computed vs taken from the disk cache (a resumed run's times cover only the computed ones)
        and, for reasoning, generation statistics."""
        out = {"computed_batches": self.cache.misses, "cached_batches": self.cache.hits}
        if self.generated_tokens:
            out |= {"mean_generated_tokens": float(np.mean(self.generated_tokens)),
                    "wrote_answer_marker": float(np.mean(self.wrote_marker)), "token_budget": self.reasoning_tokens}
        return out


def reencode_items(store: ItemStore, items: Sequence[Item], engine: Engine, cache_dir: Path | None = None,
                   batch_size: int = 16) -> None:
    """Encode `items` with their item prompts and upsert them into `store` (in memory; nothing is saved)."""
    cache = BatchCache(cache_dir, {"items": engine.item_fingerprint.to_json()})
    if items:
        store.add_items(list(items), encode_items(items, engine, cache, batch_size, "re-encoding items"), upsert=True)


def encode_items(items: Sequence[Item], engine: Engine, cache: BatchCache, batch_size: int, desc: str) -> np.ndarray:
    """Item vectors (item prompts) of `items`, batch by batch through `cache`, with a progress bar."""
    vectors = [np.zeros((0, engine.hidden_size), dtype=np.float32)]
    for first in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch"):
        prompts = [item_prompt(item) for item in items[first : first + batch_size]]
        vectors.append(cache.get_or_compute(prompts, engine.embed_items))
    return np.concatenate(vectors)
