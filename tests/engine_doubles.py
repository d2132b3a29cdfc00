"""Test doubles for the batching and coalescing tests: an engine that records its calls and can hold them at a
gate, and a batch observer that records batch sizes and can hold the batcher's worker before a decode step.
Both make concurrency deterministic: a test holds the work, arranges the queue, then lets go (no sleeps).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from model.engines.base import Engine, Generation, Reasoning

GATE_TIMEOUT_S = 120.0  # a held call gives up (and fails the test loudly) after this long


class GatedEngine:
    """A real engine behind a gate: every call is recorded as (method, rows); while `hold()` is on, each call
    waits at the gate (after setting `entered`) until `release()`; `error` is raised instead of answering."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.reasoning_adapter = inner.reasoning_adapter
        self.hidden_size = inner.hidden_size
        self.calls: list[tuple[str, int]] = []
        self.entered = threading.Event()
        self.error: Exception | None = None
        self._gate: threading.Event | None = None

    def hold(self) -> None:
        self.entered.clear()
        self._gate = threading.Event()

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def _enter(self, method: str, rows: int) -> None:
        self.calls.append((method, rows))
        gate = self._gate
        if gate is not None:
            self.entered.set()
            if not gate.wait(GATE_TIMEOUT_S):
                raise TimeoutError("the test never released the gate")
        if self.error is not None:
            raise self.error

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        self._enter("reason", len(user_texts))
        return self.inner.reason(user_texts, max_new_tokens)

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        self._enter("embed_direct", len(user_texts))
        return self.inner.embed_direct(user_texts)

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        self._enter("embed_items", len(item_texts))
        return self.inner.embed_items(item_texts)

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]:
        self._enter("generate", len(user_texts))
        return self.inner.generate(user_texts, assistant_prefixes, max_new_tokens, stop)

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray:
        self._enter("choice_probs", len(user_texts))
        return self.inner.choice_probs(user_texts, assistant_prefixes, choices)


class StepObserver:
    """A `BatchObserver` recording (method, rows) of every batch; `hold_next_step()` makes the worker stop before
    its next decode step (setting `at_step`) until `release()`."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.at_step = threading.Event()
        self._gate: threading.Event | None = None

    def hold_next_step(self) -> None:
        self.at_step.clear()
        self._gate = threading.Event()

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def decode_steps(self) -> list[int]:
        return [rows for method, rows in self.batches if method == "decode"]

    def engine_batch(self, method: str, rows: int) -> None:
        self.batches.append((method, rows))
        gate = self._gate
        if method == "decode" and gate is not None:
            self.at_step.set()
            gate.wait(GATE_TIMEOUT_S)

    def engine_queued(self, method: str, seconds: float) -> None: ...

    def engine_expired(self, method: str) -> None: ...
