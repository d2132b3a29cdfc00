"""The micro-batching engine on the tiny model: continuous batching (rows join and leave a running decode),
per-request batching of the other calls, deadlines, errors and shutdown. Deterministic: the worker is held at a
gate (`engine_doubles`) while a test arranges the queue, never raced against the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from engine_doubles import GatedEngine, StepObserver

from model.engines.base import Deadline, DeadlineExpired, Reasoning
from model.engines.batching import EngineClosed, MicroBatchingEngine

PROMPTS = [
    "[Toy Story (1995)] (5)\n[Heat (1995)] (4)",
    "hi",
    "[Alien (1979)] (5)\n[Aliens (1986)] (4)\n[Big (1988)] (2) and a much longer line of history text here",
    "x",
]
LONG_WINDOW_S = 120.0  # an idle batcher then starts only when the batch is full: batches are exact


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def assert_same_reasoning(got: Reasoning, expected: Reasoning) -> None:
    assert got.text == expected.text and got.generated_tokens == expected.generated_tokens
    assert cosine(got.vector, expected.vector) > 0.9999


@pytest.fixture
def observer() -> StepObserver:
    return StepObserver()


@pytest.fixture
def batching(tiny_engine, observer) -> Iterator[MicroBatchingEngine]:
    engine = MicroBatchingEngine(tiny_engine, window_s=0.0, max_batch=4, observer=observer)
    yield engine
    observer.release()
    engine.close()


@pytest.fixture
def gated(tiny_engine) -> Iterator[GatedEngine]:
    engine = GatedEngine(tiny_engine)
    yield engine
    engine.release()


def test_concurrent_decodes_equal_single_calls(tiny_engine, observer):
    budgets = [3, 12, 7, 10]
    engine = MicroBatchingEngine(tiny_engine, window_s=LONG_WINDOW_S, max_batch=4, observer=observer)
    try:
        futures = [engine.submit("reason", [(p,)], (n,)) for p, n in zip(PROMPTS, budgets, strict=False)]
        generated = engine.submit("generate", [(PROMPTS[0], "<a>"), (PROMPTS[2], "")], (6, "</a>"))
        for prompt, n, future in zip(PROMPTS, budgets, futures, strict=False):
            assert_same_reasoning(future.result()[0], tiny_engine.reason([prompt], n)[0])
        assert generated.result() == tiny_engine.generate([PROMPTS[0], PROMPTS[2]], ["<a>", ""], 6, "</a>")
    finally:
        engine.close()
    steps = observer.decode_steps()
    assert steps[0] == 4, "the four reasoning rows start together"
    assert max(steps) == 4 and steps[-1] < 4, "rows leave as they finish, the rest go on"


def test_a_row_joins_a_running_batch_and_leaves_it_first(batching, observer, tiny_engine):
    observer.hold_next_step()
    long = batching.submit("reason", [(PROMPTS[0],)], (12,))
    assert observer.at_step.wait(60)  # the long row is decoding, the worker waits before its first step
    short = batching.submit("reason", [(PROMPTS[1],)], (3,))
    observer.release()
    short_result, long_result = short.result()[0], long.result()[0]
    steps = observer.decode_steps()
    assert steps[0] == 1 and steps[1:4] == [2, 2, 2], "the short row joined at the next step"
    assert steps[4:] == [1] * 8, "then it left while the long row went on alone"
    assert_same_reasoning(short_result, tiny_engine.reason([PROMPTS[1]], 3)[0])
    assert_same_reasoning(long_result, tiny_engine.reason([PROMPTS[0]], 12)[0])


def test_a_call_whose_deadline_passed_in_the_queue_is_not_computed(batching, observer):
    observer.hold_next_step()
    running = batching.submit("reason", [(PROMPTS[0],)], (5,))
    assert observer.at_step.wait(60)
    late = batching.submit("reason", [(PROMPTS[1],)], (5,), deadline=Deadline(time.monotonic() - 1.0))
    observer.release()
    with pytest.raises(DeadlineExpired):
        late.result()
    assert running.result()[0].generated_tokens == 5
    assert batching.stats.expired == 1 and max(observer.decode_steps()) == 1, "the late row never joined"


def test_a_started_call_runs_to_the_end_after_its_deadline(batching, observer):
    deadline = Deadline.after(600.0)
    observer.hold_next_step()
    started = batching.submit("reason", [(PROMPTS[0],)], (5,), deadline=deadline)
    assert observer.at_step.wait(60)
    deadline.at = time.monotonic() - 1.0  # every waiter gave up while it decodes
    observer.release()
    assert started.result()[0].generated_tokens == 5 and batching.stats.expired == 0


def test_other_calls_are_batched_per_method_and_parameters(gated, tiny_engine):
    engine = MicroBatchingEngine(gated, window_s=0.0, max_batch=2)
    try:
        gated.hold()
        blocker = engine.submit("embed_items", [("x",)], ())
        assert gated.entered.wait(60)
        embeds = [engine.submit("embed_direct", [(p,)], ()) for p in PROMPTS[:3]]
        reasons = [engine.submit("reason", [(p,)], (4,)) for p in PROMPTS[:2]]
        other_budget = engine.submit("reason", [(PROMPTS[3],)], (6,))
        assert engine.pending() == 6
        gated.release()
        blocker.result()
        vectors = np.concatenate([f.result() for f in embeds])
        assert np.allclose(vectors, tiny_engine.embed_direct(PROMPTS[:3]), atol=1e-5)
        for prompt, future in zip(PROMPTS[:2], reasons, strict=False):
            assert_same_reasoning(future.result()[0], tiny_engine.reason([prompt], 4)[0])
        assert other_budget.result()[0].generated_tokens == 6
    finally:
        engine.close()
    assert gated.calls == [
        ("embed_items", 1), ("embed_direct", 2), ("embed_direct", 1), ("reason", 2), ("reason", 1)
    ], "the queue with the oldest call first, at most max_batch rows, one batch per (method, parameters)"


def test_a_failing_batch_fails_each_of_its_callers_and_the_worker_lives_on(gated):
    engine = MicroBatchingEngine(gated, window_s=0.0, max_batch=4)
    try:
        gated.hold()
        blocker = engine.submit("embed_items", [("x",)], ())
        assert gated.entered.wait(60)
        failing = [engine.submit("embed_direct", [(p,)], ()) for p in PROMPTS[:2]]
        gated.error = RuntimeError("boom")
        gated.release()
        for future in [blocker, *failing]:
            with pytest.raises(RuntimeError, match="boom"):
                future.result()
        assert gated.calls[-1] == ("embed_direct", 2), "both callers shared the failing batch"
        gated.error = None
        assert engine.reason([PROMPTS[0]], 3)[0].generated_tokens == 3
    finally:
        engine.close()


def test_close_fails_queued_calls_finishes_the_running_one_and_refuses_new_ones(gated):
    engine = MicroBatchingEngine(gated, window_s=0.0, max_batch=4)
    gated.hold()
    running = engine.submit("embed_items", [("x",)], ())
    assert gated.entered.wait(60)
    queued = engine.submit("embed_direct", [("y",)], ())
    closer = threading.Thread(target=engine.close)
    closer.start()
    with pytest.raises(EngineClosed):
        queued.result(timeout=60)
    with pytest.raises(EngineClosed):
        engine.embed_direct(["z"])
    gated.release()
    closer.join(timeout=60)
    assert running.result().shape == (1, gated.hidden_size) and gated.calls == [("embed_items", 1)]


def test_sync_calls_with_several_rows_or_none(batching, tiny_engine):
    assert batching.reason([], 4) == [] and batching.embed_items([]).shape == (0, tiny_engine.hidden_size)
    results = batching.reason(PROMPTS, 4)  # one call with several rows: each row decodes in the batch
    for prompt, got in zip(PROMPTS, results, strict=False):
        assert_same_reasoning(got, tiny_engine.reason([prompt], 4)[0])
    probs = batching.choice_probs(PROMPTS[:2], ["a", "b"], ["1", "2"])
    assert np.allclose(probs, tiny_engine.choice_probs(PROMPTS[:2], ["a", "b"], ["1", "2"]), atol=1e-6)
