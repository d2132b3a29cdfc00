"""POST /recommend end to end (uvicorn + httpx, tiny model, shared Redis): rankers, cache hits, exclusion."""

from __future__ import annotations

import math

import pytest
import redis
from pydantic import ValidationError
from service_helpers import SHARED_REDIS, history, popular_order, tiny_settings

from model.prompts import TEMPLATE_VERSION


def test_reasoning_then_the_same_call_is_cached(gateway, catalog, redis_prefix):
    body = {"history": history("3", "7", "12"), "k": 5}
    first = gateway.client.post("/recommend", json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["ranker"] == "reasoning" and data["fallback"] is None and data["cached"] is False
    assert isinstance(data["reasoning"], str) and data["reasoning"]
    assert data["model"] == {"id": "tiny-llama", "weights_hash": data["model"]["weights_hash"], "adapter_hash": None,
                             "reasoning_adapter": None, "template_version": TEMPLATE_VERSION}
    assert data["index_version"] == 1
    ids = [item["item_id"] for item in data["items"]]
    assert len(ids) == 5 and len(set(ids)) == 5 and not {"3", "7", "12"} & set(ids)
    assert all(item["title"] == catalog[item["item_id"]].title for item in data["items"])
    scores = [item["score"] for item in data["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    timings = data["timings_ms"]
    assert timings["reasoning"] > 0 and timings["search"] >= 0 and timings["embed"] is None
    assert timings["total"] >= timings["reasoning"]

    second = gateway.client.post("/recommend", json=body).json()
    assert second["cached"] is True and second["items"] == data["items"] and second["reasoning"] == data["reasoning"]
    assert second["timings_ms"]["reasoning"] is None and second["timings_ms"]["cache"] is not None

    # the entry is really in Redis, under the private prefix, with a TTL
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = list(client.scan_iter(match=redis_prefix + "*"))
    assert len(keys) == 1 and 0 < client.ttl(keys[0]) <= 24 * 3600
    client.close()


def test_cache_key_covers_the_budget_but_not_k(gateway):
    body = {"history": history("5", "6"), "k": 3, "max_reasoning_tokens": 4}
    assert gateway.client.post("/recommend", json=body).json()["cached"] is False
    wider = gateway.client.post("/recommend", json={**body, "k": 8}).json()
    assert wider["cached"] is True and len(wider["items"]) == 8
    longer = gateway.client.post("/recommend", json={**body, "max_reasoning_tokens": 6}).json()
    assert longer["cached"] is False


def test_direct_ranker_has_no_reasoning(gateway):
    body = {"history": history("1", "2"), "ranker": "direct", "k": 4}
    data = gateway.client.post("/recommend", json=body).json()
    assert data["ranker"] == "direct" and data["reasoning"] is None and data["cached"] is False
    assert data["timings_ms"]["embed"] > 0 and data["timings_ms"]["reasoning"] is None
    again = gateway.client.post("/recommend", json=body).json()
    assert again["cached"] is True and again["items"] == data["items"]


def test_popular_ranker_orders_by_rating_count_then_id(gateway, catalog):
    data = gateway.client.post("/recommend", json={"history": history("9"), "ranker": "popular", "k": 12}).json()
    expected = [i for i in popular_order(catalog) if i != "9"][:12]
    assert [item["item_id"] for item in data["items"]] == expected
    assert [item["score"] for item in data["items"]] == [float(catalog[i].rating_count) for i in expected]
    assert data["reasoning"] is None and data["fallback"] is None


def test_history_exclusion_and_k_up_to_the_catalog_size(gateway, catalog):
    n = len(catalog)
    seen = history("4", "8", "15")
    excluded = gateway.client.post("/recommend", json={"history": seen, "k": n}).json()
    ids = [item["item_id"] for item in excluded["items"]]
    assert len(ids) == n - 3 and set(ids) == set(catalog.ids()) - {"4", "8", "15"}
    kept = gateway.client.post("/recommend", json={"history": seen, "k": n, "exclude_history": False}).json()
    assert kept["cached"] is True and {item["item_id"] for item in kept["items"]} == set(catalog.ids())


def test_titles_outside_the_catalog_are_reasoned_about(gateway):
    body = {"history": [{"title": "Some Film Not In The Catalog (1999)", "rating": 5}, {"item_id": "2"}], "k": 3,
            "user_id": "u-42"}
    data = gateway.client.post("/recommend", json=body).json()
    assert len(data["items"]) == 3 and "2" not in {item["item_id"] for item in data["items"]}
    other = gateway.client.post("/recommend", json={**body, "history": [{"title": "Another Film"}, {"item_id": "2"}]})
    assert other.json()["cached"] is False  # a different prompt is a different cache entry


def test_the_popularity_prior_adds_weighted_log_counts_to_the_cosine(gateway, serve, index_dir, tiny_engine,
                                                                      catalog, redis_prefix):
    body = {"history": history("2", "5"), "ranker": "direct", "k": len(catalog)}
    cosine = {item["item_id"]: item["score"] for item in gateway.client.post("/recommend", json=body).json()["items"]}
    weight = 0.5
    prior = serve(tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix,
                                popularity_prior=weight), tiny_engine)
    data = prior.client.post("/recommend", json={**body, "k": 5}).json()
    assert data["cached"] is True  # the same user vector, searched with the prior
    combined = {i: s + weight * math.log1p(catalog[i].rating_count) for i, s in cosine.items()}
    expected = sorted(combined, key=lambda i: -combined[i])[:5]
    assert [item["item_id"] for item in data["items"]] == expected
    assert [item["score"] for item in data["items"]] == pytest.approx([combined[i] for i in expected], abs=1e-5)
    assert expected != sorted(cosine, key=lambda i: -cosine[i])[:5]  # the prior changed the ranking
    with pytest.raises(ValidationError, match="popularity_prior"):
        tiny_settings(index_dir, popularity_prior=-1.0)
