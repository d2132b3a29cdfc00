"""What every engine returns and the interface the service and the trainer program against.

An engine turns prompts into reasoning text and user/item vectors exactly as DESIGN.md section 2 defines them:
the vector is the final-layer hidden state (after the final norm) of the last token of
[user prompt][assistant: text ending in `<answer>`], rendered with the chat template and no end-of-turn.
Implementations: `model.transformers_engine.TransformersEngine` (in-process) and `model.vllm_engine.VllmEngine`
(a client of the vLLM generate and pooling servers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from indexer.manifest import ModelFingerprint


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
    """Prompt in (user message text), reasoning and vectors out. Batched: lists in, lists out, same order."""

    fingerprint: ModelFingerprint
    """The model of user vectors, reasoning and ratings (what cache keys carry)."""
    item_fingerprint: ModelFingerprint
    """The model of item vectors (what the index manifest carries): `fingerprint`, except for a user-side adapter,
    whose items keep the base model's vectors."""
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
