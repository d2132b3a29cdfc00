"""What every engine returns and the interface the service and the trainer program against.

An engine turns prompts into reasoning text and user/item vectors exactly as docs/design.md section 2 defines them:
the vector is the final-layer hidden state (after the final norm) of the last token of
[user prompt][assistant: text ending in `<answer>`], rendered with the chat template and no end-of-turn.
Implementations: `model.engines.transformers_engine.TransformersEngine` (in-process) and
`model.engines.vllm_engine.VllmEngine` (a client of the vLLM generate and pooling servers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from indexer.core.fingerprint import ModelFingerprint


class DeadlineExpired(Exception):
    """The call's deadline passed while it was queued; it was not computed."""


@dataclass
class Deadline:
    """A point in `time.monotonic()` time after which nobody waits for a result any more."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.at

    def extend(self, at: float) -> None:
        """Someone else waits for the same result until `at`: keep the later of the two."""
        self.at = max(self.at, at)


current_deadline: ContextVar[Deadline | None] = ContextVar("engine_deadline", default=None)
"""The deadline of the engine call the current thread makes (set by the caller; `asyncio.to_thread` carries it
into the worker thread). An engine may drop a call whose deadline passed before it started (`DeadlineExpired`)."""


@dataclass(frozen=True)
class Reasoning:
    """A reasoning completion and the user vector taken at its `<answer>` marker."""

    text: str
    """The assistant's reasoning, everything before `<answer>` (exactly what the vector was computed on)."""
    vector: np.ndarray
    """float32 (hidden,), not normalized."""
    generated_tokens: int
    """Tokens the model generated (including those of a marker it wrote itself)."""
    wrote_marker: bool
    """True when the model wrote `<answer>` itself; False when the budget or end-of-turn came first and the
    marker was appended (the normal case for the untrained default model)."""


@dataclass(frozen=True)
class Generation:
    """Plain generated text for an assistant turn that was started with a given prefix."""

    text: str
    """Text after the prefix, cut just before the stop string if it appeared."""
    generated_tokens: int
    stopped: bool
    """True when the stop string appeared; False when the token budget or end-of-turn ended it."""


class Engine(Protocol):
    """Prompt in (user message text), reasoning and vectors out. Batched: lists in, lists out, same order. An
    engine that queues work (`model.engines.batching`) reads `current_deadline` and raises `DeadlineExpired` for a call
    whose deadline passed before it started; a started call always runs to the end."""

    fingerprint: ModelFingerprint
    """The model of every item vector, `direct` vector and rating (what index manifests and cache keys carry)."""
    reasoning_adapter: str | None
    """Hash of the adapter switched on for reasonings and the state after them (cache keys and responses name
    it), None when the reasoning comes from the base weights too."""
    hidden_size: int

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]: ...

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray: ...

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray: ...

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]: ...

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray: ...


def single_token_ids(tokenizer: Any, choices: Sequence[str]) -> list[int]:
    """The one token id of each of `choices` under `tokenizer` (no special tokens): what `choice_probs` reads;
    a choice of several tokens is a ValueError."""
    out = []
    for choice in choices:
        ids = list(tokenizer(choice, add_special_tokens=False)["input_ids"])
        if len(ids) != 1:
            raise ValueError(f"choice {choice!r} is not a single token for this tokenizer")
        out.append(ids[0])
    return out
