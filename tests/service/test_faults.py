"""Overload and engine faults: 429 over the in-flight limit, fallbacks on engine timeout and error, the 500 envelope."""

from __future__ import annotations

import logging
import threading
import time

import httpx
from service_helpers import assert_error, history, popular_order, tiny_settings

from service.main import create_app


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_over_the_inflight_limit_is_refused_at_once(serve, index_dir, faulty_engine):
    faulty_engine.delay_s = 1.5
    server = serve(tiny_settings(index_dir, max_inflight=1), faulty_engine)
    slow_result: list[httpx.Response] = []
    def slow_request() -> None:
        slow_result.append(httpx.post(f"{server.url}/recommend", json={"history": history("1")}, timeout=30))

    slow = threading.Thread(target=slow_request)
    slow.start()
    wait_for(lambda: server.metric("reasonrec_inflight_requests") == 1)

    start = time.monotonic()
    refused = server.client.post("/recommend", json={"history": history("2")})
    assert time.monotonic() - start < 0.5
    error = assert_error(refused, 429, "too_many_requests")
    assert "REASONREC_MAX_INFLIGHT" in error["message"] and refused.headers["retry-after"] == "1"
    assert_error(server.client.post("/rate", json={"history": history("2"), "item_id": "3"}), 429, "too_many_requests")
    assert server.client.get("/healthz").status_code == 200  # probes are never limited
    assert server.metric("reasonrec_rejected_total") == 2

    slow.join(timeout=30)
    assert slow_result[0].status_code == 200 and slow_result[0].json()["fallback"] is None
    assert server.metric("reasonrec_inflight_requests") == 0
    faulty_engine.delay_s = 0.0
    assert server.client.post("/recommend", json={"history": history("2")}).status_code == 200


def test_engine_timeout_falls_back_to_the_popular_ranker(serve, index_dir, faulty_engine, catalog):
    faulty_engine.delay_s = 1.0
    server = serve(tiny_settings(index_dir, request_timeout_s=0.2), faulty_engine)
    start = time.monotonic()
    data = server.client.post("/recommend", json={"history": history("1", "2"), "k": 5}).json()
    assert time.monotonic() - start < 0.9
    assert data["fallback"] == "timeout" and data["ranker"] == "popular" and data["reasoning"] is None
    assert [item["item_id"] for item in data["items"]] == [i for i in popular_order(catalog) if i not in "12"][:5]
    assert data["timings_ms"]["reasoning"] >= 200 and data["cached"] is False

    rated = server.client.post("/rate", json={"history": history("1"), "item_id": "4"}).json()
    assert rated["fallback"] == "timeout" and rated["parsed"] is False and rated["reasoning"] is None
    assert rated["rating"] == catalog["4"].avg_rating
    assert server.metric("reasonrec_fallback_total", reason="timeout") == 2

    # a fallback answer is not cached, the engine's late answer is: the retry gets the engine's answer (from the
    # cache, or by joining the computation if it still runs; tests/service/test_coalescing.py pins down which)
    faulty_engine.delay_s = 0.0
    time.sleep(1.0)  # let the abandoned calls finish
    fresh = server.client.post("/recommend", json={"history": history("1", "2"), "k": 5}).json()
    assert fresh["fallback"] is None and fresh["ranker"] == "reasoning"


def test_engine_error_falls_back_and_is_logged(serve, index_dir, faulty_engine, catalog, caplog):
    faulty_engine.error = RuntimeError("CUDA fell off the bus")
    server = serve(tiny_settings(index_dir, default_ranker="direct"), faulty_engine)
    with caplog.at_level(logging.ERROR, logger="service.engine_calls"):
        response = server.client.post(
            "/recommend", json={"history": history("3")}, headers={"x-request-id": "req-77"}
        )
    data = response.json()
    assert response.status_code == 200 and data["fallback"] == "engine_error" and data["ranker"] == "popular"
    assert len(data["items"]) == 10 and response.headers["x-request-id"] == "req-77"
    logged = [r for r in caplog.records if r.exc_info and "CUDA fell off the bus" in str(r.exc_info[1])]
    assert logged and all(r.request_id == "req-77" for r in logged)

    rate_body = {"history": history("1", rating=2.0), "item_id": "7", "mode": "direct"}
    rated = server.client.post("/rate", json=rate_body)
    assert rated.json()["fallback"] == "engine_error" and rated.json()["rating"] == catalog["7"].avg_rating
    assert server.metric("reasonrec_fallback_total", reason="engine_error") == 2


def test_unexpected_error_is_a_500_envelope_with_the_request_id(serve, index_dir, tiny_engine, caplog):
    """The last resort for bugs. No route is known to raise (broken parts are 503s or fallbacks), so the test adds
    one that does."""
    settings = tiny_settings(index_dir)
    app = create_app(settings, engine=tiny_engine)

    def explode() -> None:
        raise RuntimeError("encoder exploded")

    app.add_api_route("/explode", explode, methods=["POST"])
    server = serve(settings, app=app)
    with caplog.at_level(logging.ERROR, logger="service.middleware"):
        response = server.client.post("/explode", headers={"x-request-id": "boom-1"})
    error = assert_error(response, 500, "internal_error")
    assert "boom-1" in error["message"] and response.headers["x-request-id"] == "boom-1"
    assert "encoder exploded" not in error["message"]  # internals stay in the log
    logged = [r for r in caplog.records if r.exc_info and "encoder exploded" in str(r.exc_info[1])]
    assert logged and all(r.request_id == "boom-1" for r in logged)
