"""Probes, /metrics, /docs, the request headers, and starting without a usable index (503, then ready)."""

from __future__ import annotations

import re

from service_helpers import assert_error, build_index, history, tiny_settings

from indexer.core.fingerprint import ModelFingerprint
from indexer.store import ItemStore


def test_probes_docs_and_headers(gateway, catalog):
    health = gateway.client.get("/healthz")
    assert health.json() == {"status": "ok"} and re.fullmatch(r"[0-9a-f]{32}", health.headers["x-request-id"])
    assert float(health.headers["x-total-time"]) >= 0
    assert gateway.client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert gateway.client.get("/healthz", headers={"x-request-id": "bad id!"}).headers["x-request-id"] != "bad id!"

    ready = gateway.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["index_version"] == 1
    assert "tiny-llama" in ready["model"] and f"{len(catalog)} items" in ready["index"]
    assert ready["cache"] == "redis: redis reachable"

    assert "swagger" in gateway.client.get("/docs").text.lower()
    spec = gateway.client.get("/openapi.json").json()
    assert {"/recommend", "/rate", "/admin/items", "/admin/items/{item_id}", "/items/{item_id}", "/healthz",
            "/readyz", "/metrics"} <= set(spec["paths"])
    assert "ErrorEnvelope" in spec["components"]["schemas"]


def test_metrics_expose_the_histograms_and_counters(gateway, catalog):
    body = {"history": history("1", "2"), "k": 3}
    gateway.client.post("/recommend", json=body)
    gateway.client.post("/recommend", json=body)
    gateway.client.post("/recommend", json={**body, "ranker": "direct"})
    gateway.client.get("/no-such-path")
    gateway.client.post("/recommend", json={**body, "k": 0})
    text = gateway.client.get("/metrics").text
    count = "reasonrec_request_duration_seconds_count"
    assert f'{count}{{endpoint="/recommend",ranker="reasoning",status="200"}} 2.0' in text
    bucket = "reasonrec_request_duration_seconds_bucket"
    assert f'{bucket}{{endpoint="/recommend",le="+Inf",ranker="direct",status="200"}} 1.0' in text
    assert f'{count}{{endpoint="unmatched",ranker="",status="404"}} 1.0' in text
    assert f'{count}{{endpoint="/recommend",ranker="",status="422"}} 1.0' in text  # refused before a ranker was read
    for stage in ("cache", "reasoning", "embed", "search"):
        assert f'reasonrec_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert gateway.metric("reasonrec_cache_total", result="hit") == 1
    assert gateway.metric("reasonrec_cache_total", result="miss") == 2
    assert gateway.metric("reasonrec_generated_tokens_total") > 0
    assert gateway.metric("reasonrec_index_items") == len(catalog)
    assert gateway.metric("reasonrec_inflight_requests") == 0
    assert "# TYPE reasonrec_fallback_total counter" in text and "# TYPE reasonrec_rejected_total counter" in text


def test_missing_index_is_503_until_one_is_built(serve, tmp_path, tiny_engine, catalog):
    index_dir = tmp_path / "not-built-yet"
    server = serve(tiny_settings(index_dir, dataset="ml-1m"), tiny_engine)
    assert server.client.get("/healthz").status_code == 200
    error = assert_error(server.client.get("/readyz"), 503, "not_ready")
    assert "reasonrec index --dataset ml-1m" in error["message"] and str(index_dir) in error["message"]
    assert_error(server.client.post("/recommend", json={"history": history("1")}), 503, "not_ready")
    assert_error(server.client.get("/items/1"), 503, "not_ready")

    build_index(tiny_engine, catalog, index_dir)  # what `reasonrec index` does; no restart needed
    assert server.client.get("/readyz").json()["status"] == "ready"
    assert server.client.post("/recommend", json={"history": history("1")}).status_code == 200


def test_index_of_another_model_is_503_naming_the_mismatch(serve, tmp_path, tiny_engine, catalog):
    other = ModelFingerprint("other-model", "abc123", None, "v1")
    vectors = tiny_engine.embed_items([item.title for item in catalog])
    ItemStore.create(catalog, vectors, other).save(tmp_path / "index")
    server = serve(tiny_settings(tmp_path / "index"), tiny_engine)
    error = assert_error(server.client.get("/readyz"), 503, "not_ready")
    assert "model_id='other-model'" in error["message"] and "reasonrec index" in error["message"]
