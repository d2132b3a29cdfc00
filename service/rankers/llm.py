"""The served language-model rankers, `reasoning` and `direct`: the cores of `model.rankers.llm` behind the cache.

User prompt -> cache lookup -> on a miss the core's engine stage in a worker thread under the request deadline ->
cache {reasoning, state} -> the core's search stage over the current index: with the item table (the default when
one is configured) u = s(history) + f(state) against the table's rows, plus for `reasoning` the conclusion term
(`model.rankers.conclusion`), else the state by cosine (plus the popularity prior when `popularity_prior` is set).
When the state adds nothing to the score (f is zero), `direct` runs no forward pass and says so in `notes`.
Identical concurrent requests share one engine computation, whose result is cached even if it comes after the
deadline (`service.coalesce`). The cache key covers the model fingerprint, the mode, the engine settings (for a
reasoning its adapter) and the prompt, never the index version or the table: a cached state is searched against
whatever the index holds now.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from model.engines.base import Deadline, Engine
from model.networks.table_artifact import TableArtifact
from model.rankers.conclusion import ConclusionTerm
from model.rankers.llm import LlmRanker, UserState
from service.cache import CacheEntry, cache_key
from service.coalesce import Coalescer
from service.engine_calls import call_engine
from service.metrics import Metrics
from service.rankers.base import Ranked, RankQuery, StoreGetter


@dataclass(frozen=True)
class LlmServing:
    """What the language-model rankers use besides the store and the metrics."""

    engine: Engine
    table: TableArtifact | None
    """The item table: u = s(history) + f(state) over its rows; None: the raw state by cosine."""
    coalescer: Coalescer
    timeout_s: float
    """How long a request waits for the engine (`REASONREC_REQUEST_TIMEOUT_S`)."""
    popularity_prior: float
    """Weight of the popularity prior on the cosine (`REASONREC_POPULARITY_PRIOR`; without a table)."""
    conclusion: ConclusionTerm
    """The reasoning's conclusion term (learned with the reasoning adapter; zero without one)."""


class ServedLlmRanker:
    """Shared flow of the two LLM rankers; subclasses name the mode and the timing stage of the engine work."""

    uses_engine: ClassVar[bool] = True
    mode: ClassVar[str]
    stage: ClassVar[str]

    def __init__(self, store: StoreGetter, metrics: Metrics, llm: LlmServing) -> None:
        self.store, self.metrics, self.llm = store, metrics, llm
        self.core = LlmRanker(self.mode, llm.engine, llm.table, term=llm.conclusion)

    async def compute(self, prompt: str, query: RankQuery, deadline: Deadline) -> CacheEntry:
        out = (await call_engine(lambda: self.core.encode([prompt], query.reasoning_tokens), deadline))[0]
        self.metrics.generated_tokens.inc(out.generated_tokens)
        if self.mode == "reasoning" and not out.wrote_marker:
            self.metrics.reasoning_budget_capped.inc()
        return CacheEntry(out.meta(), out.vector)

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        if not self.core.needs_engine:
            return await self._rank_without_engine(query, timings_ms)
        llm = self.llm
        prompt = self.core.prompt(query.history)
        key = cache_key(llm.engine.fingerprint, self.mode, self.core.settings(query.reasoning_tokens), prompt)
        store = self.store()
        entry, cached = await llm.coalescer.get(
            key, lambda deadline: self.compute(prompt, query, deadline),
            accept=lambda found: found.vector is not None and self.core.usable(store, found.vector), stage=self.stage,
            timeout_s=llm.timeout_s, timings_ms=timings_ms,
        )
        assert entry.vector is not None, "accepted entries hold a usable state"
        user = UserState.from_meta(entry.vector, entry.meta)
        predictions = self.core.conclusions([user.reasoning], store.catalog)
        with self.metrics.stage("search", timings_ms):
            results = await asyncio.to_thread(self.core.search, store, [query.history], user.vector[None, :], query.k,
                                              [query.exclude], llm.popularity_prior, None, predictions)
        return Ranked(results[0], user.reasoning, cached, self.core.notes() + self._title_notes(query), predictions[0])

    async def _rank_without_engine(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        """`direct` when the state adds nothing to the score: s(history) alone, no forward pass."""
        store = self.store()
        no_state = np.zeros((1, self.llm.engine.hidden_size), dtype=np.float32)
        with self.metrics.stage("search", timings_ms):
            results = await asyncio.to_thread(self.core.search, store, [query.history], no_state, query.k,
                                              [query.exclude])
        return Ranked(results[0], notes=self.core.notes() + self._title_notes(query))

    def _title_notes(self, query: RankQuery) -> tuple[str, ...]:
        """Entries given by title only have no row for `s` (placed by their text they cost more than leaving them
        out: docs/results/ml-100k-leave-one-out-title-history.md)."""
        if self.llm.table is None or all(i is not None for i in query.history.item_ids):
            return ()
        return ("the history entries given by title only are left out of s(history); the model reads them in the "
                "prompt",)


class ReasoningRanker(ServedLlmRanker):
    """Greedy reasoning up to `<answer>` (or the token budget), user vector at the marker."""

    mode = "reasoning"
    stage = "reasoning"


class DirectRanker(ServedLlmRanker):
    """No reasoning: the assistant turn is just `<answer>`, one forward pass."""

    mode = "direct"
    stage = "embed"
