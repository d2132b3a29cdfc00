"""Continuous (iteration-level) batching of greedy decodes on a `TransformersEngine`, as in Orca (Yu et al.,
OSDI 2022) and vLLM: rows join a running batch between decode steps and leave it as soon as they are done, so a
short answer never waits for a long one and a new request never waits for a whole batch to finish.

A joining row is prefilled on its own (left-padded with the other rows admitted at the same step; the running
rows wait for that prefill, ~1 s per 500-token prompt on 2 CPU cores: chunked prefill would bound the stall and
is not done) and its KV cache is merged into the running batch's: both caches are left-padded to a common
width, padding masked out, and each row keeps its own position ids, exactly as in the engine's own left-padded
batches. A finished row is split off with its cache (the reasoning rows then get their user vector from it:
`_finish_reasoning`), and the columns no remaining row uses are trimmed. Every step uses the engine's own hooks
(`_prefill`, `_accept_token`, `_feed_step`), so a row decodes exactly as it would in
`TransformersEngine.reason`/`generate`, up to float rounding of batched matrix products. Only plain
`DynamicLayer` caches (no sliding window) are supported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from model.engines.base import Generation, Reasoning
from model.engines.transformers_engine import TransformersEngine, _DecodeState


@dataclass(eq=False)
class DecodeRow:
    """One sequence to decode: `reason` (user vector at `<answer>`) or `generate` (text up to `stop`)."""

    kind: str
    """"reason" or "generate"."""
    user_text: str
    prefix: str
    """Start of the assistant turn ("" for reasoning)."""
    max_new_tokens: int
    stop: str
    tag: Any = None
    """The caller's handle, returned with the result."""


Finished = tuple[DecodeRow, Reasoning | Generation]


def _layers(past: Any) -> list[DynamicLayer]:
    layers = list(past.layers)
    for layer in layers:
        if type(layer) is not DynamicLayer:
            kind = type(layer).__name__
            raise NotImplementedError(f"continuous batching needs plain DynamicLayer caches, not {kind}")
    return layers


def _cache_like(past: Any, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A shallow copy of the DynamicCache `past` holding the given (keys, values) per layer."""
    out = copy.copy(past)
    out.layers = []
    for layer, (keys, values) in zip(past.layers, tensors, strict=True):
        new = copy.copy(layer)
        new.keys, new.values = keys, values
        out.layers.append(new)
    return out


def _left_pad(x: torch.Tensor, width: int, axis: int) -> torch.Tensor:
    """Zeros on the left of `axis` (-1 for masks, -2 for KV tensors) up to `width`."""
    missing = width - x.shape[axis]
    if missing == 0:
        return x
    return F.pad(x, (missing, 0) if axis == -1 else (0, 0, missing, 0))


def merge_states(a: _DecodeState, b: _DecodeState) -> _DecodeState:
    """The rows of `a`, then those of `b`, in one left-padded batch."""
    width = max(a.attention_mask.shape[1], b.attention_mask.shape[1])

    def cat(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.cat([_left_pad(x, width, axis), _left_pad(y, width, axis)])

    past = _cache_like(a.past, [
        (cat(la.keys, lb.keys, -2), cat(la.values, lb.values, -2))
        for la, lb in zip(_layers(a.past), _layers(b.past), strict=True)
    ])
    return _DecodeState(
        past, cat(a.attention_mask, b.attention_mask, -1), torch.cat([a.lengths, b.lengths]), a.fed + b.fed,
        a.generated + b.generated, a.texts + b.texts, a.stopped + b.stopped,
    )


def select_rows(state: _DecodeState, rows: list[int]) -> _DecodeState:
    """Those rows of `state` only (a new cache), without the leading columns none of them attends to."""
    index = torch.tensor(rows, dtype=torch.long)
    mask = state.attention_mask[index]
    first = int(mask.any(dim=0).nonzero()[0])
    past = _cache_like(state.past, [
        (layer.keys[index, :, first:], layer.values[index, :, first:]) for layer in _layers(state.past)
    ])
    return _DecodeState(
        past, mask[:, first:], state.lengths[index], [state.fed[i] for i in rows],
        [state.generated[i] for i in rows], [state.texts[i] for i in rows], [state.stopped[i] for i in rows],
    )


class DecodeBatch:
    """The rows decoding together now. Not thread-safe: one worker thread calls `admit` and `step`."""

    def __init__(self, engine: TransformersEngine) -> None:
        self.engine = engine
        self.rows: list[DecodeRow] = []
        self._state: _DecodeState | None = None
        self._next: list[int] = []  # each row's greedy next token, from the last prefill or step

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: list[DecodeRow]) -> None:
        """Prefill `rows` together and add them to the batch; they take their first token at the next `step`."""
        engine = self.engine
        rendered = [engine.render(row.user_text, row.prefix) for row in rows]
        reasoning = all(row.kind == "reason" for row in rows)
        if engine.reasoning_adapter and not reasoning:
            raise ValueError("with a reasoning adapter only reasoning rows decode together (the adapter is on)")
        with engine._scope(reasoning=reasoning):
            hidden, past, mask, ids = engine._prefill(rendered)
            logits = engine._lm_head(hidden[:, -1])
        n = len(rows)
        new = _DecodeState(past, mask, mask.sum(-1), fed=ids, generated=[[] for _ in range(n)], texts=[""] * n,
                           stopped=[False] * n)
        self._state = new if self._state is None else merge_states(self._state, new)
        self.rows += rows
        self._next += logits.argmax(-1).tolist()

    def step(self) -> list[Finished]:
        """Give every row its next token; retire the rows that are done (with their results); decode one step."""
        state = self._state
        if state is None:
            return []
        done = [
            row.max_new_tokens <= 0 or self.engine._accept_token(state, i, token, row.max_new_tokens, row.stop)
            for i, (row, token) in enumerate(zip(self.rows, self._next, strict=True))
        ]
        finished = self._retire([i for i, d in enumerate(done) if d])
        keep = [i for i, d in enumerate(done) if not d]
        if not keep:
            self.reset()
            return finished
        if len(keep) < len(done):
            self._state = state = select_rows(state, keep)
            self.rows = [self.rows[i] for i in keep]
        with self.engine._scope(reasoning=all(row.kind == "reason" for row in self.rows)):
            logits = self.engine._feed_step(state, [False] * len(keep))
        self._next = logits.argmax(-1).tolist()
        return finished

    def reset(self) -> None:
        """Drop every row (after a finished batch, or when a step failed)."""
        self.rows, self._state, self._next = [], None, []

    def _retire(self, rows: list[int]) -> list[Finished]:
        """Results of the given rows: reasoning rows get their user vectors from their own slice of the cache."""
        state = self._state
        if not rows or state is None:
            return []
        results: dict[int, Reasoning | Generation] = {}
        reasoning = [i for i in rows if self.rows[i].kind == "reason"]
        if reasoning:
            texts = [self.rows[i].user_text for i in reasoning]
            outs = self.engine._finish_reasoning(texts, select_rows(state, reasoning))
            results.update(zip(reasoning, outs, strict=True))
        for i in rows:
            row = self.rows[i]
            if row.kind == "generate":
                results[i] = Generation(state.texts[i].split(row.stop, 1)[0], len(state.generated[i]), state.stopped[i])
        return [(self.rows[i], results[i]) for i in rows]
