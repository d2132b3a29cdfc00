"""The language-model side of the evaluation job: the LLM rankers of the service (`model.rankers.llm`) with a
disk cache of their engine stage, the engine and the item index they search (loaded once, lazily), the item
re-encoding that keeps held-out ratings out of item prompts (see `trainer.evaluation.job`), and the rating
section of the leave-one-out report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from indexer.core.catalog import Catalog
from indexer.core.paths import artifacts_dir, table_dir
from indexer.store import ItemStore
from model.engines.transformers_engine import TransformersEngine, load_engine
from model.networks.table_artifact import TableArtifact, finished_table
from model.rankers.llm import LlmRanker, UserState
from model.rankers.table import TableRanker
from trainer.batch_cache import BatchCache, item_state_cache, item_states
from trainer.data.datasets import Dataset
from trainer.data.splits import Example, Split, train_catalog, training_counts
from trainer.evaluation.config import EvalConfig, Samples
from trainer.evaluation.ratings import baseline_predictions, llm_predictions, rated, summarize
from trainer.protocol.harness import CoreRanker, user_history


class LlmEvalRanker:
    """A language-model ranker core as the harness sees it: the engine stage cached on disk per batch, the search
    stage over every item of the store (so the full ranking is the service's search with k = all items)."""

    def __init__(self, core: LlmRanker, store: ItemStore, catalog: Catalog, candidates: Sequence[str],
                 reasoning_tokens: int = 48, cache_dir: Path | None = None, batch_size: int = 16,
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
        histories = [user_history(e, self.catalog) for e in examples]
        results = self.core.search(self.store, histories, np.stack([s.vector for s in states]), len(self.store),
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


class LlmContext:
    """Engine, index and training-split catalog for the LLM rankers and ratings of one evaluation."""

    def __init__(self, config: EvalConfig, ds: Dataset, split: Split, candidates: list[str]) -> None:
        self.config = config
        self.ds = ds
        self.split = split
        self.candidates = candidates
        self.train_catalog = train_catalog(ds.catalog, split)
        self.cache_dir = config.cache_dir or artifacts_dir() / "eval-cache"

    @cached_property
    def engine(self) -> TransformersEngine:
        return load_engine(self.config.model, self.config.adapter, batch_size=self.config.llm_batch_size)

    @cached_property
    def item_states(self) -> np.ndarray:
        """The model's raw states of every candidate's item prompt (cached on disk, shared with train-table)."""
        return item_states([self.ds.catalog[i] for i in self.candidates], self.engine,
                           item_state_cache(self.feature_cache, self.engine))

    @property
    def feature_cache(self) -> Path:
        return artifacts_dir() / "table-cache" / self.ds.name

    @cached_property
    def store(self) -> ItemStore:
        """The raw states' index: `--index-dir` when given (as `reasonrec index` built it), else built in memory
        from the cached item states (centered, cosine)."""
        if self.config.index_dir is not None:
            return ItemStore.load(self.config.index_dir, expect=self.engine.fingerprint)
        catalog = Catalog({i: self.ds.catalog[i] for i in self.candidates})
        return ItemStore.create(catalog, self.item_states, self.engine.fingerprint, dataset=self.ds.name)

    @cached_property
    def table(self) -> TableArtifact | None:
        """The item table of this split (`--table`, else train-table's folder when it finished), or None."""
        folder = self.config.table or table_dir(self.config.dataset, self.config.protocol)
        if not finished_table(folder):
            if self.config.table is not None:
                raise FileNotFoundError(f"--table {folder} is not a finished `reasonrec train-table` artifact")
            return None
        table = TableArtifact.load(folder)
        if table.meta.get("config", {}).get("protocol") != self.config.protocol:
            raise ValueError(f"the item table {folder} was trained on another split than {self.config.protocol}")
        return table

    @cached_property
    def table_store(self) -> ItemStore:
        """The table's rows for every candidate, as `reasonrec index --table` builds the served index."""
        assert self.table is not None
        items = [self.ds.catalog[i] for i in self.candidates]
        return ItemStore.create(Catalog({i.item_id: i for i in items}), self.table.index_rows(items, self.item_states),
                                self.engine.fingerprint, dataset=self.ds.name, table=self.table.table_hash)

    def ranker(self, name: str, popularity_prior: float | None = None) -> LlmEvalRanker:
        """The LLM ranker called `name`: `direct`/`reasoning` (over the table when there is one, else by cosine),
        `head` (f(h) alone over the table), `direct-cosine` (the raw states by cosine, with the config's
        popularity prior unless another weight is given)."""
        weight = self.config.popularity_prior if popularity_prior is None else popularity_prior
        mode = "reasoning" if name == "reasoning" else "direct"
        table = None if name == "direct-cosine" or self.table is None else self.table
        if name == "head" and table is None:
            raise ValueError("--rankers head needs an item table (reasonrec train-table)")
        core = LlmRanker(mode, self.engine, table, head="alone" if name == "head" else "residual")
        core.name = name
        return LlmEvalRanker(core, self.table_store if table else self.store, self.ds.catalog, self.candidates,
                             reasoning_tokens=self.config.reasoning_tokens, cache_dir=self.cache_dir / "users",
                             batch_size=2 * self.config.llm_batch_size, popularity_prior=0.0 if table else weight,
                             counts=self.training_counts)

    def table_ranker(self, residuals: bool) -> CoreRanker:
        """s(history) alone over the table (`residuals=False`: every item's content part only)."""
        assert self.table is not None
        return CoreRanker(TableRanker(self.table, self.table_store, residuals), self.ds.catalog, self.candidates)

    @cached_property
    def training_counts(self) -> dict[str, int]:
        """Each candidate's number of training interactions (the `popular` ranker's counts: no held-out data)."""
        return training_counts(self.candidates, self.split)

    def describe(self) -> str:
        fp = self.engine.fingerprint
        adapter = f", LoRA adapter {self.config.adapter} ({fp.adapter_hash})" if fp.adapter_hash else ", no adapter"
        return f"LLM {fp.model_id} (weights {fp.weights_hash}{adapter}, templates {fp.template_version})"

    def notes(self) -> list[str]:
        out = ["LLM rankers: the model's final state h at `<answer>` (prompts show the 20 most recent history "
               "items with months, genres and ratings); history excluded."]
        if "table" in self.__dict__ and self.table is not None:
            heads = self.table.meta.get("heads", {})
            out.append(f"Item table {self.table.meta.get('config', {})} ({self.table.table_hash}): item row [v, b] = "
                       f"[g(c) + e, g_b(c) + e_b], content features {self.table.spec.describe()}; `table` ranks with "
                       "u = s(history) alone, `table-content` with every item's content part g(c) only (no "
                       "residuals), `direct`/`reasoning` with u = s(history) + f(h), `head` with u = f(h) alone (a "
                       f"head trained without s); score u . v + b. Heads trained on {heads.get('samples')} cut "
                       "states of training users (direct prompts).")
        if "store" in self.__dict__:
            out.append("direct-cosine: h by cosine against the raw item states (centered with their mean): no table.")
        if self.config.popularity_prior:
            out.append(f"LLM rankers add a popularity prior to the cosine: {self.config.popularity_prior} x log(1 + "
                       "the item's number of training interactions) (indexer.prior; the weight is chosen on "
                       "validation users, not on these).")
        return out


def rating_section(config: EvalConfig, split: Split, llm: LlmContext | None, samples: Samples) -> dict:
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
