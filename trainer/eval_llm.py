"""The language-model side of the evaluation job: the engine and the item index it searches (loaded once,
lazily), the item re-encoding that keeps held-out ratings out of item prompts (see `trainer.eval_job`), and the
rating section of the leave-one-out report.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING

from indexer.store import ItemStore
from model.paths import artifacts_dir, default_index_dir
from model.transformers_engine import TransformersEngine, load_engine
from trainer.data import Dataset
from trainer.llm_rankers import LlmRanker, reencode_items
from trainer.rankers import PopularityRanker
from trainer.rating_eval import baseline_predictions, llm_predictions, rated, summarize
from trainer.splits import ColdSplit, Split, train_catalog

if TYPE_CHECKING:
    from trainer.eval_job import EvalConfig, _Samples


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
        return self.config.index_dir or default_index_dir(self.config.dataset, self.engine.item_fingerprint)

    @cached_property
    def store(self) -> ItemStore:
        """The model's item index, with the items named by `--reencode` re-encoded from training statistics
        (`bare`: from none, as brand-new items read)."""
        store = ItemStore.load(self.index_dir, expect=self.engine.item_fingerprint)
        cold = ([i for i in self.candidates if i in self.split.cold_items] if isinstance(self.split, ColdSplit)
                else [])
        self.reencoded = ([i for i in self.candidates if i in self.train_catalog]
                          if self.config.reencode in ("all", "bare") else cold)
        # items whose vectors come from their content neighbors are not encoded from their own prompts
        imputed = set(cold) if self.config.cold_neighbors else set()
        items = [self.train_catalog[i] for i in self.reencoded if i not in imputed]
        if self.config.reencode == "bare":
            items = [item.without_ratings() for item in items]
        reencode_items(store, items, self.engine, self.cache_dir / "items", batch_size=16)
        if imputed:
            from trainer.cold_neighbors import impute_cold_vectors
            from trainer.content import MiniLMEncoder

            warm = [self.train_catalog[i] for i in self.candidates if i not in imputed]
            impute_cold_vectors(store, [self.train_catalog[i] for i in cold], warm, MiniLMEncoder(),
                                self.config.cold_neighbors)
        return store

    def ranker(self, mode: str, popularity_prior: float | None = None) -> LlmRanker:
        """The LLM ranker of `mode`, with the config's popularity prior unless another weight is given."""
        weight = self.config.popularity_prior if popularity_prior is None else popularity_prior
        return LlmRanker(mode, self.engine, self.store, self.ds.catalog, self.candidates,
                         reasoning_tokens=self.config.reasoning_tokens, cache_dir=self.cache_dir / "users",
                         batch_size=2 * self.config.llm_batch_size, popularity_prior=weight,
                         counts=self.training_counts)

    @cached_property
    def training_counts(self) -> dict[str, int]:
        """Each candidate's number of training interactions (the `popular` ranker's counts: no held-out data)."""
        return dict(zip(self.candidates, PopularityRanker(self.candidates, self.split.train).row.astype(int).tolist(),
                        strict=True))

    def describe(self) -> str:
        fp = self.engine.fingerprint
        adapter = f", LoRA adapter {self.config.adapter} ({fp.adapter_hash})" if fp.adapter_hash else ", no adapter"
        if self.engine.item_fingerprint != fp:
            adapter += " on user prompts only (items: the base model)"
        return f"LLM {fp.model_id} (weights {fp.weights_hash}{adapter}, templates {fp.template_version})"

    def notes(self) -> list[str]:
        out = [f"LLM rankers: user vector from the engine, searched in the index {self.index_dir} through "
               "ItemStore.search (centered with the index's stored mean, then cosine), history excluded; prompts "
               "show the 20 most recent history items with ratings, ages relative to the target's time."]
        if self.config.popularity_prior:
            out.append(f"LLM rankers add a popularity prior to the cosine: {self.config.popularity_prior} x log(1 + "
                       "the item's number of training interactions) (indexer.prior; the weight is chosen on "
                       "validation users, not on these).")
        if "store" in self.__dict__:  # only when an LLM ranker ran
            out.append(self._leak_note())
            if self.config.cold_neighbors:
                out.append("Cold items' vectors: the cold items counted above are not encoded from their own prompts; "
                           f"each one's vector is the mean stored vector of its {self.config.cold_neighbors} most "
                           "similar warm items by all-MiniLM-L6-v2 cosine of title, genres and description "
                           "(trainer.cold_neighbors).")
        return out

    def _leak_note(self) -> str:
        """How much held-out information the item prompts that were *not* re-encoded carry."""
        reencoded = set(self.reencoded)
        kept = [i for i in self.candidates if i not in reencoded]
        full = sum(self.ds.catalog[i].rating_count for i in kept)
        held_out = full - sum(self.train_catalog[i].rating_count for i in kept)
        shown = ("no item shows rating statistics" if self.config.reencode == "bare"
                 else "cold items then show no rating statistics, like a brand-new item")
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
            "(DESIGN.md, Surprise on ML-1M, random 5-fold CV, not this split): SVD RMSE .873, global baseline .909.")
    return {"rows": rows, "note": note}
