"""Continuous batching on the real SmolLM2 (slow): rows that join a running decode and leave it early give the
same reasoning and user vectors as single calls, KV-cache shortcut included."""

from __future__ import annotations

import numpy as np
import pytest
from engine_doubles import StepObserver

from model.engines.batching import MicroBatchingEngine

pytestmark = pytest.mark.slow

PROMPTS = [
    "Here is a user's history:\n[Toy Story (1995)] (5)\n[Heat (1995)] (4)\nName the next movie inside <answer>.",
    "History: [Alien (1979)] (5), [Aliens (1986)] (4). Think, then answer in <answer>.",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_joining_and_leaving_rows_match_single_calls(real_engine):
    observer = StepObserver()
    engine = MicroBatchingEngine(real_engine, window_s=0.0, max_batch=2, observer=observer)
    try:
        observer.hold_next_step()
        long = engine.submit("reason", [(PROMPTS[0],)], (10,))
        assert observer.at_step.wait(120)
        short = engine.submit("reason", [(PROMPTS[1],)], (4,))
        observer.release()
        results = [short.result()[0], long.result()[0]]
    finally:
        engine.close()
    assert 2 in observer.decode_steps() and observer.decode_steps()[-1] == 1
    for got, (prompt, budget) in zip(results, [(PROMPTS[1], 4), (PROMPTS[0], 10)], strict=True):
        single = real_engine.reason([prompt], budget)[0]
        assert got.text == single.text and got.generated_tokens == single.generated_tokens
        assert cosine(got.vector, single.vector) > 0.999
