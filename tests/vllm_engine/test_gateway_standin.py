"""The gateway with REASONREC_ENGINE=vllm, against stand-in vLLM servers on a saved tiny model folder: the same
answers as the transformers engine, and the fallback when the vLLM replicas fail or are slow."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import (
    ADMIN_TOKEN,
    admin_headers,
    build_index,
    history,
    make_catalog,
    start_server,
    tiny_settings,
)

from model.engines.loading import folder_fingerprint, load_model
from model.engines.tiny import tiny_llama, tiny_tokenizer
from model.engines.transformers_engine import TransformersEngine

BODY = {"history": history("1", "2", "3"), "k": 5, "max_reasoning_tokens": 6}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-folder"
    tiny_llama().save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder_index(model_dir, tmp_path_factory) -> Path:
    return build_index(TransformersEngine(load_model(str(model_dir))), make_catalog(), tmp_path_factory.mktemp("ix"))


@pytest.fixture
def vllm_gateway(standin, model_dir, folder_index):
    servers = [standin(load_model(str(model_dir))) for _ in range(2)]
    urls = [s.url for s in servers]
    settings = tiny_settings(folder_index, model=str(model_dir), engine="vllm", vllm_generate_urls=urls,
                             vllm_pool_urls=urls, request_timeout_s=2.0, vllm_retry_after_s=60)
    gateway = start_server(settings, None)
    yield gateway, servers
    gateway.stop()


def test_the_served_folder_has_the_fingerprint_of_the_index(model_dir):
    assert folder_fingerprint(model_dir) == load_model(str(model_dir)).fingerprint


def test_vllm_gateway_answers_as_the_transformers_gateway(vllm_gateway, model_dir, folder_index):
    gateway, servers = vllm_gateway
    reference = start_server(tiny_settings(folder_index, model=str(model_dir)), None)
    try:
        for ranker in ("reasoning", "direct"):
            ours = gateway.client.post("/recommend", json={**BODY, "ranker": ranker}).json()
            theirs = reference.client.post("/recommend", json={**BODY, "ranker": ranker}).json()
            assert ours["fallback"] is None and ours["ranker"] == ranker
            assert [i["item_id"] for i in ours["items"]] == [i["item_id"] for i in theirs["items"]]
            assert ours["reasoning"] == theirs["reasoning"]
        rated = gateway.client.post("/rate", json={"history": BODY["history"], "item_id": "7"}).json()
        assert rated["fallback"] is None and rated["rating"] == pytest.approx(
            reference.client.post("/rate", json={"history": BODY["history"], "item_id": "7"}).json()["rating"],
            abs=1e-4)
    finally:
        reference.stop()
    assert all(s.calls["/v1/completions"] + s.calls["/v1/embeddings"] > 0 for s in servers)


def test_admin_items_are_encoded_by_the_pooling_replicas(vllm_gateway):
    gateway, servers = vllm_gateway
    new = {"item_id": "new-1", "title": "A New Film", "genres": ["Drama"], "year": 2026}
    added = gateway.client.post("/admin/items", json={"items": [new]}, headers=admin_headers(ADMIN_TOKEN))
    assert added.status_code == 200, added.text
    assert sum(s.calls["/v1/embeddings"] for s in servers) == 1
    assert gateway.client.get("/items/new-1").status_code == 200


def test_failing_replicas_give_the_fallback_ranker_and_the_service_stays_ready(vllm_gateway):
    gateway, servers = vllm_gateway
    for server in servers:
        server.faults.status = 500
    answer = gateway.client.post("/recommend", json=BODY).json()
    assert answer["fallback"] == "engine_error" and answer["ranker"] == "popular" and len(answer["items"]) == 5
    assert sum(s.calls["/v1/completions"] for s in servers) == 2  # tried on each replica once
    again = gateway.client.post("/recommend", json={**BODY, "history": history("4", "5")}).json()
    assert again["fallback"] == "engine_error"  # refused at once: both replicas are out of rotation
    assert sum(s.calls["/v1/completions"] for s in servers) == 2
    assert gateway.client.get("/readyz").status_code == 200


def test_slow_replicas_give_the_timeout_fallback(vllm_gateway):
    gateway, servers = vllm_gateway
    for server in servers:
        server.faults.delay_s = 3.0
    answer = gateway.client.post("/recommend", json=BODY).json()
    assert answer["fallback"] == "timeout" and answer["ranker"] == "popular"


def test_the_gateway_sends_the_api_key_the_servers_require(standin, model_dir, folder_index):
    server = standin(load_model(str(model_dir)))
    server.faults.api_key = "vllm-secret"
    common = {"model": str(model_dir), "engine": "vllm", "vllm_generate_urls": [server.url],
              "vllm_pool_urls": [server.url], "request_timeout_s": 2.0}
    without = start_server(tiny_settings(folder_index, **common), None)
    try:
        refused = without.client.post("/recommend", json=BODY).json()
        assert refused["fallback"] == "engine_error" and server.calls["/v1/completions"] == 1
    finally:
        without.stop()
    keyed = start_server(tiny_settings(folder_index, vllm_api_key="vllm-secret", **common), None)
    try:
        answer = keyed.client.post("/recommend", json=BODY).json()
        assert answer["fallback"] is None and answer["ranker"] == "reasoning", answer
    finally:
        keyed.stop()


def test_readyz_reports_each_vllm_server_and_stays_ready_when_one_is_down(vllm_gateway):
    gateway, servers = vllm_gateway
    ready = gateway.client.get("/readyz").json()
    assert ready["engine"].count(" ok") == 4, ready["engine"]  # two servers, each in both roles
    servers[1].stop()
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200, ready.text  # the other replica, or the fallback ranker, answers
    engine = ready.json()["engine"]
    assert f"{servers[1].url} down" in engine and f"{servers[0].url} ok" in engine
