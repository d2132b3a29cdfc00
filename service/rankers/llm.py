"""The language-model rankers: `reasoning` (think, then the vector at `<answer>`) and `direct` (no reasoning).

Both follow DESIGN.md sections 2-3: user prompt -> cache lookup -> on a miss the engine in a worker thread
under the request deadline -> cache {reasoning, vector} -> cosine search of the item index. The cache key
covers the model fingerprint, the mode, the sampling parameters and the prompt, never the index version:
a cached user vector is searched against whatever the index holds now.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from model.prompts import user_prompt
from service.cache import CacheEntry, cache_key
from service.engine_calls import call_engine
from service.rankers.base import RankQuery, Ranked

if TYPE_CHECKING:
    from service.state import AppState


class LlmRanker(ABC):
    """Shared flow of the two LLM rankers; subclasses say how the user vector is computed."""

    uses_engine: ClassVar[bool] = True
    mode: ClassVar[str]

    def __init__(self, state: AppState) -> None:
        self.state = state

    def sampling(self, query: RankQuery) -> dict[str, Any]:
        """Everything besides the prompt that changes the engine's output (part of the cache key)."""
        return {"greedy": True}

    @abstractmethod
    async def compute(self, prompt: str, query: RankQuery, timings_ms: dict[str, float]) -> CacheEntry:
        """Run the engine for `prompt` (under the deadline) and return what is cached: reasoning and vector."""

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        state = self.state
        prompt = user_prompt(query.history, query.now)
        key = cache_key(state.engine.fingerprint, self.mode, self.sampling(query), prompt)
        with state.metrics.stage("cache", timings_ms):
            entry = await state.cache.get(key)
        cached = entry is not None
        if entry is None:
            entry = await self.compute(prompt, query, timings_ms)
            with state.metrics.stage("cache", timings_ms):
                await state.cache.set(key, entry)
        assert entry.vector is not None, "an LLM ranker's cache entry always holds the user vector"
        store = state.ready_store()
        with state.metrics.stage("search", timings_ms):
            results = await asyncio.to_thread(store.search, entry.vector[None, :], query.k, [query.exclude])
        return Ranked(results[0], entry.meta.get("reasoning"), cached)


class ReasoningRanker(LlmRanker):
    """Greedy reasoning up to `<answer>` (or the token budget), user vector at the marker."""

    mode = "reasoning"

    def sampling(self, query: RankQuery) -> dict[str, Any]:
        return {"greedy": True, "max_new_tokens": query.reasoning_tokens}

    async def compute(self, prompt: str, query: RankQuery, timings_ms: dict[str, float]) -> CacheEntry:
        state = self.state
        with state.metrics.stage("reasoning", timings_ms):
            out = await call_engine(
                lambda: state.engine.reason([prompt], query.reasoning_tokens)[0], state.settings.request_timeout_s
            )
        state.metrics.generated_tokens.inc(out.generated_tokens)
        meta = {"reasoning": out.text, "generated_tokens": out.generated_tokens, "wrote_marker": out.wrote_marker}
        return CacheEntry(meta, out.vector)


class DirectRanker(LlmRanker):
    """No reasoning: the assistant turn is just `<answer>`, one forward pass."""

    mode = "direct"

    async def compute(self, prompt: str, query: RankQuery, timings_ms: dict[str, float]) -> CacheEntry:
        state = self.state
        with state.metrics.stage("embed", timings_ms):
            vector = await call_engine(lambda: state.engine.embed_direct([prompt])[0], state.settings.request_timeout_s)
        return CacheEntry({"reasoning": None}, vector)
