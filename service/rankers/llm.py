"""The language-model rankers: `reasoning` (think, then the vector at `<answer>`) and `direct` (no reasoning).

Both follow DESIGN.md sections 2-3: user prompt -> cache lookup -> on a miss the engine in a worker thread
under the request deadline -> cache {reasoning, vector} -> cosine search of the item index (plus the popularity
prior of `indexer.prior` when `popularity_prior` is set). Identical
concurrent requests share one engine computation, whose result is cached even if it comes after the deadline
(`service.coalesce`). The cache key covers the model fingerprint, the mode, the sampling parameters and the
prompt, never the index version: a cached user vector is searched against whatever the index holds now.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from model.batching import Deadline
from model.prompts import user_prompt
from service.cache import CacheEntry, cache_key
from service.engine_calls import call_engine
from service.rankers.base import Ranked, RankQuery

if TYPE_CHECKING:
    from service.state import AppState


class LlmRanker(ABC):
    """Shared flow of the two LLM rankers; subclasses say how the user vector is computed."""

    uses_engine: ClassVar[bool] = True
    mode: ClassVar[str]
    stage: ClassVar[str]
    """The timing stage of the engine work (`reasoning` or `embed`)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def sampling(self, query: RankQuery) -> dict[str, Any]:
        """Everything besides the prompt that changes the engine's output (part of the cache key)."""
        return {"greedy": True}

    @abstractmethod
    async def compute(self, prompt: str, query: RankQuery, deadline: Deadline) -> CacheEntry:
        """Run the engine for `prompt` (under `deadline`) and return what is cached: reasoning and vector."""

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        state = self.state
        prompt = user_prompt(query.history, query.now)
        key = cache_key(state.engine.fingerprint, self.mode, self.sampling(query), prompt)
        store = state.ready_store()
        entry, cached = await state.coalescer.get(
            key, lambda deadline: self.compute(prompt, query, deadline),
            accept=lambda found: found.vector is not None and store.searchable(found.vector), stage=self.stage,
            timeout_s=state.settings.request_timeout_s, timings_ms=timings_ms,
        )
        assert entry.vector is not None, "accepted entries hold a searchable user vector"
        with state.metrics.stage("search", timings_ms):
            results = await asyncio.to_thread(store.search, entry.vector[None, :], query.k, [query.exclude],
                                              state.settings.popularity_prior)
        return Ranked(results[0], entry.meta.get("reasoning"), cached)


class ReasoningRanker(LlmRanker):
    """Greedy reasoning up to `<answer>` (or the token budget), user vector at the marker."""

    mode = "reasoning"
    stage = "reasoning"

    def sampling(self, query: RankQuery) -> dict[str, Any]:
        return {"greedy": True, "max_new_tokens": query.reasoning_tokens}

    async def compute(self, prompt: str, query: RankQuery, deadline: Deadline) -> CacheEntry:
        state = self.state
        out = await call_engine(lambda: state.engine.reason([prompt], query.reasoning_tokens)[0], deadline)
        state.metrics.generated_tokens.inc(out.generated_tokens)
        meta = {"reasoning": out.text, "generated_tokens": out.generated_tokens, "wrote_marker": out.wrote_marker}
        return CacheEntry(meta, out.vector)


class DirectRanker(LlmRanker):
    """No reasoning: the assistant turn is just `<answer>`, one forward pass."""

    mode = "direct"
    stage = "embed"

    async def compute(self, prompt: str, query: RankQuery, deadline: Deadline) -> CacheEntry:
        state = self.state
        vector = await call_engine(lambda: state.engine.embed_direct([prompt])[0], deadline)
        return CacheEntry({"reasoning": None}, vector)
