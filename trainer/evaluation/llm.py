"""The language-model side of the evaluation job: the LLM rankers of the service (`model.rankers.llm`) with a
disk cache of their engine stage, the engine and the item index they search (loaded once, lazily), the item
re-encoding that keeps held-out ratings out of item prompts (see `trainer.evaluation.job`), and the rating
section of the leave-one-out report.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from indexer.catalog import Catalog, Item
from indexer.store import ItemStore
from model.engine import Engine
from model.paths import artifacts_dir, index_dir_for
from model.prompts import item_prompt
from model.rankers.llm import LlmRanker, UserState
from model.transformers_engine import TransformersEngine, load_engine
from trainer.batch_cache import BatchCache
from trainer.data.datasets import Dataset
from trainer.data.splits import ColdSplit, Example, Split, train_catalog
from trainer.evaluation.harness import user_history
from trainer.evaluation.ratings import baseline_predictions, llm_predictions, rated, summarize

if TYPE_CHECKING:
    from trainer.evaluation.job import EvalConfig, _Samples


class LlmEvalRanker:
    """A language-model ranker core as the harness sees it: the engine stage cached on disk per batch, the search
    stage over every item of the store (so the full ranking is the service's search with k = all items)."""

    def __init__(self, core: LlmRanker, store: ItemStore, catalog: Catalog, candidates: Sequence[str],
                 reasoning_tokens: int = 64, cache_dir: Path | None = None, batch_size: int = 16,
                 popularity_prior: float = 0.0, counts: Mapping[str, int] | None = None) -> None:
        self.core, self.store, self.catalog = core, store, catalog
        self.name, self.batch_size, self.reasoning_tokens = core.name, batch_size, reasoning_tokens
        self.popularity_prior, self.counts = popularity_prior, counts
        self.column = {item_id: j for j, item_id in enumerate(candidates)}
        namespace = {"mode": core.mode, "fingerprint": core.engine.fingerprint.to_json(),
                     **core.settings(reasoning_tokens)}
        self.cache = BatchCache(cache_dir, namespace)
        self.generated_tokens: list[int] = []
        self.wrote_marker: list[bool] = []

    def _encode(self, prompts: list[str]) -> np.ndarray:
        """Vectors plus the (generated tokens, wrote marker) columns, as one cacheable array."""
        states = self.core.encode(prompts, self.reasoning_tokens)
        return np.hstack([np.stack([s.vector for s in states]),
                          np.array([[s.generated_tokens, s.wrote_marker] for s in states], dtype=np.float32)])

    def states(self, examples: Sequence[Example]) -> list[UserState]:
        prompts = [self.core.prompt(user_history(e, self.catalog)) for e in examples]
        encoded = self.cache.get_or_compute(prompts, self._encode)
        return [UserState(row[:-2], None, int(row[-2]), bool(row[-1])) for row in encoded]

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        states = self.states(examples)
        if self.core.mode == "reasoning":
            self.generated_tokens += [s.generated_tokens for s in states]
            self.wrote_marker += [s.wrote_marker for s in states]
        results = self.core.search(self.store, np.stack([s.vector for s in states]), len(self.store),
                                   [{x.item_id for x in e.history} for e in examples], self.popularity_prior,
                                   self.counts)
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


def encode_items(items: Sequence[Item], engine: Engine, cache: BatchCache, batch_size: int, desc: str) -> np.ndarray:
    """Item vectors (item prompts) of `items`, batch by batch through `cache`, with a progress bar."""
    vectors = [np.zeros((0, engine.hidden_size), dtype=np.float32)]
    for first in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch"):
        prompts = [item_prompt(item) for item in items[first : first + batch_size]]
        vectors.append(cache.get_or_compute(prompts, engine.embed_items))
    return np.concatenate(vectors)


def reencode_items(store: ItemStore, items: Sequence[Item], engine: Engine, cache_dir: Path | None = None,
                   batch_size: int = 16) -> None:
    """Encode `items` with their item prompts and upsert them into `store` (in memory; nothing is saved), through
    the same hot-add path the service uses (`ItemStore.add_items`, stored mean unchanged)."""
    cache = BatchCache(cache_dir, {"items": engine.fingerprint.to_json()})
    if items:
        store.add_items(list(items), encode_items(items, engine, cache, batch_size, "re-encoding items"), upsert=True)


class LlmContext:
    """Engine, index and training-split catalog for the LLM rankers and ratings of one evaluation."""

    def __init__(self, config: EvalConfig, ds: Dataset, split: Split, candidates: list[str]) -> None:
        self.config = config
        self.ds = ds
        self.split = split
        self.candidates = candidates
        self.train_catalog = train_catalog(ds.catalog, split)
        self.cache_dir = config.cache_dir or artifacts_dir() / "eval-cache"
        self.reencoded: list[str] = []

    @cached_property
    def engine(self) -> TransformersEngine:
        return load_engine(self.config.model, self.config.adapter, batch_size=self.config.llm_batch_size)

    @cached_property
    def index_dir(self):
        return index_dir_for(self.config.dataset, self.engine.fingerprint, self.config.index_dir)

    @cached_property
    def store(self) -> ItemStore:
        """The model's item index, with the items named by `--reencode` re-encoded from training statistics."""
        store = ItemStore.load(self.index_dir, expect=self.engine.fingerprint)
        cold = ([i for i in self.candidates if i in self.split.cold_items] if isinstance(self.split, ColdSplit)
                else [])
        self.reencoded = ([i for i in self.candidates if i in self.train_catalog]
                          if self.config.reencode == "all" else cold)
        reencode_items(store, [self.train_catalog[i] for i in self.reencoded], self.engine, self.cache_dir / "items",
                       batch_size=16)
        return store

    def ranker(self, mode: str, popularity_prior: float | None = None) -> LlmEvalRanker:
        """The LLM ranker of `mode`, with the config's popularity prior unless another weight is given."""
        weight = self.config.popularity_prior if popularity_prior is None else popularity_prior
        return LlmEvalRanker(LlmRanker(mode, self.engine), self.store, self.ds.catalog, self.candidates,
                             reasoning_tokens=self.config.reasoning_tokens, cache_dir=self.cache_dir / "users",
                             batch_size=2 * self.config.llm_batch_size, popularity_prior=weight,
                             counts=self.training_counts)

    @cached_property
    def training_counts(self) -> dict[str, int]:
        """Each candidate's number of training interactions (the `popular` ranker's counts: no held-out data)."""
        return training_counts(self.candidates, self.split)

    def describe(self) -> str:
        fp = self.engine.fingerprint
        adapter = f", LoRA adapter {self.config.adapter} ({fp.adapter_hash})" if fp.adapter_hash else ", no adapter"
        return f"LLM {fp.model_id} (weights {fp.weights_hash}{adapter}, templates {fp.template_version})"

    def notes(self) -> list[str]:
        out = [f"LLM rankers: user vector from the engine, searched in the index {self.index_dir} through "
               "ItemStore.search (centered with the index's stored mean, then cosine), history excluded; prompts "
               "show the 20 most recent history items with ratings and months."]
        if self.config.popularity_prior:
            out.append(f"LLM rankers add a popularity prior to the cosine: {self.config.popularity_prior} x log(1 + "
                       "the item's number of training interactions) (indexer.prior; the weight is chosen on "
                       "validation users, not on these).")
        if "store" in self.__dict__:  # only when an LLM ranker ran
            out.append(self._leak_note())
        return out

    def _leak_note(self) -> str:
        """How much held-out information the item prompts that were *not* re-encoded carry."""
        reencoded = set(self.reencoded)
        kept = [i for i in self.candidates if i not in reencoded]
        full = sum(self.ds.catalog[i].rating_count for i in kept)
        held_out = full - sum(self.train_catalog[i].rating_count for i in kept)
        shown = "cold items then show no rating statistics, like a brand-new item"
        return (f"Item prompts: {len(self.reencoded)} items were re-encoded from the training split's catalog "
                f"(--reencode {self.config.reencode}; {shown}); the other {len(kept)} keep the index's statistics "
                f"over all ratings, of which {held_out} ({held_out / max(full, 1):.2%}) are held-out "
                "validation/test ratings.")


def rating_section(config: EvalConfig, split: Split, llm: LlmContext | None, samples: _Samples) -> dict:
    """Rows for the baselines (all test targets and the two samples) and the LLM's direct/reasoning modes."""
    examples = rated(split.test)
    sample_of = {"direct-sample": rated(samples.direct["all"]), "reasoning-sample": rated(samples.reasoning["all"])}
    rows = []
    for sample, chosen in (("all", examples), *sample_of.items()):
        for name, predictions in baseline_predictions(chosen, split.train).items():
            rows.append({"predictor": name, "sample": sample,
                         **summarize(predictions, chosen, config.bootstrap, config.bootstrap_seed)})
    if llm is not None:
        for mode, sample in (("direct", "direct-sample"), ("reasoning", "reasoning-sample")):
            chosen = sample_of[sample]
            start = time.perf_counter()
            predictions, cache = llm_predictions(llm.engine, chosen, llm.train_catalog, mode,
                                                 llm.cache_dir / "ratings", batch_size=config.llm_batch_size)
            rows.append({"predictor": f"LLM {mode}", "sample": sample,
                         **summarize(predictions, chosen, config.bootstrap, config.bootstrap_seed),
                         "seconds": round(time.perf_counter() - start, 1), "computed_batches": cache.misses,
                         "cached_batches": cache.hits})
    for row in rows:
        row["metrics"] = {m: row.pop(m) for m in ("MAE", "RMSE", "accuracy", "macro_F1")}
    note = ("Expected rating under the model's probabilities over 1..5 after `<rate>` (guided format, "
            "`model.rating.predict_ratings`); accuracy and macro-F1 on ratings rounded half up. Means from the "
            "training interactions; rating prompts show the item average from training data only. Reference "
            "(docs/design.md section 6, Surprise on ML-1M, random 5-fold CV, not this split): SVD RMSE .873, global "
            "baseline .909.")
    return {"rows": rows, "note": note}


def training_counts(candidates: Sequence[str], split: Split) -> dict[str, int]:
    """Each candidate's number of training interactions (0 for an item never seen in training)."""
    counts = Counter(x.item_id for history in split.train.values() for x in history)
    return {item_id: counts.get(item_id, 0) for item_id in candidates}
