"""Latency under load, through the real gateway: identical concurrent requests computed once, late engine answers
cached for the retry, queued work past its deadline never computed, concurrent requests batched by the engine.
The engine is held at a gate (`engine_doubles.GatedEngine`) while a test arranges the requests: no races.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from engine_doubles import GatedEngine
from service_helpers import Server, history, tiny_settings

from model.engines.batching import MicroBatchingEngine

WAIT_S = 60.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds (a generous limit, not a timing assertion)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def post_in_background(
    server: Server, bodies: list[dict], path: str = "/recommend"
) -> tuple[list[threading.Thread], list[httpx.Response]]:
    responses: list[httpx.Response] = []

    def post(body: dict) -> None:
        responses.append(httpx.post(f"{server.url}{path}", json=body, timeout=WAIT_S))

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    return threads, responses


@pytest.fixture
def gated(tiny_engine) -> Iterator[GatedEngine]:
    engine = GatedEngine(tiny_engine)
    yield engine
    engine.release()


def test_identical_concurrent_requests_are_computed_once(serve, index_dir, gated):
    server = serve(tiny_settings(index_dir), gated)
    gated.hold()
    body = {"history": history("1", "2", "3"), "k": 5}
    threads, responses = post_in_background(server, [body] * 3)
    wait_for(lambda: gated.entered.is_set() and server.metric("reasonrec_coalesced_total") == 2, "two joined")
    gated.release()
    for thread in threads:
        thread.join(WAIT_S)
    answers = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses) and len(answers) == 3
    assert all(a["fallback"] is None and not a["cached"] for a in answers)
    assert len({(a["reasoning"], tuple(i["item_id"] for i in a["items"])) for a in answers}) == 1
    assert gated.calls == [("reason", 1)]
    again = server.client.post("/recommend", json=body).json()
    assert again["cached"] and gated.calls == [("reason", 1)]


def test_identical_concurrent_ratings_are_computed_once(serve, index_dir, gated):
    server = serve(tiny_settings(index_dir), gated)
    gated.hold()
    body = {"history": history("1", "2"), "item_id": "5"}
    threads, responses = post_in_background(server, [body] * 2, path="/rate")
    wait_for(lambda: gated.entered.is_set() and server.metric("reasonrec_coalesced_total") == 1, "one joined")
    gated.release()
    for thread in threads:
        thread.join(WAIT_S)
    answers = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses) and answers[0]["rating"] == answers[1]["rating"]
    assert all(a["fallback"] is None and a["parsed"] for a in answers)
    assert [method for method, _ in gated.calls] == ["generate", "generate", "generate", "choice_probs"]


def test_a_late_engine_answer_lands_in_the_cache_for_the_retry(serve, index_dir, gated):
    server = serve(tiny_settings(index_dir, request_timeout_s=0.3), gated)
    gated.hold()
    body = {"history": history("4", "5"), "k": 3}
    first = server.client.post("/recommend", json=body).json()
    assert first["fallback"] == "timeout" and first["ranker"] == "popular"
    gated.release()
    wait_for(lambda: server.metric("reasonrec_late_results_total") == 1, "the late answer was cached")
    retry = server.client.post("/recommend", json=body).json()
    assert retry["fallback"] is None and retry["cached"] and retry["ranker"] == "reasoning"
    assert gated.calls == [("reason", 1)]


def test_queued_work_past_its_deadline_is_never_computed(serve, index_dir, gated):
    batcher = MicroBatchingEngine(gated, window_s=0.0, max_batch=1)
    try:
        server = serve(tiny_settings(index_dir, request_timeout_s=0.5), batcher)
        gated.hold()
        threads, responses = post_in_background(server, [{"history": history("1")}])
        assert gated.entered.wait(WAIT_S)  # the first request holds the engine
        queued = server.client.post("/recommend", json={"history": history("2")}).json()
        assert queued["fallback"] == "timeout" and queued["ranker"] == "popular"
        gated.release()
        threads[0].join(WAIT_S)
        assert responses[0].json()["fallback"] == "timeout"
        wait_for(lambda: server.metric("reasonrec_engine_expired_total", method="reason") == 1, "dropped unstarted")
        wait_for(lambda: server.metric("reasonrec_late_results_total") == 1, "the started one was cached")
        assert gated.calls == [("reason", 1)] and batcher.stats.expired == 1
        assert server.metric("reasonrec_fallback_total", reason="timeout") == 2
    finally:
        batcher.close()


def test_concurrent_requests_share_decode_steps(serve, index_dir, tiny_engine):
    batcher = MicroBatchingEngine(tiny_engine, window_s=WAIT_S, max_batch=3)  # starts only with three rows
    try:
        server = serve(tiny_settings(index_dir), batcher)
        bodies = [{"history": history(str(i), str(i + 1))} for i in (1, 4, 7)]
        threads, responses = post_in_background(server, bodies)
        for thread in threads:
            thread.join(WAIT_S)
        assert all(r.status_code == 200 and r.json()["fallback"] is None for r in responses)
        assert server.metric("reasonrec_engine_batch_rows_count", method="decode") > 0  # the metrics observe it
        assert batcher.stats.max_rows == 3, "the three requests decoded together"
    finally:
        batcher.close()
