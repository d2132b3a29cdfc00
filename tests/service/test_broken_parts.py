"""Broken parts are a 503 or a fallback in the error envelope, never a 500: a corrupt SASRec checkpoint, an index
whose id map is malformed, an engine that returns NaN (or degenerate) user vectors, and cache entries someone
planted in Redis. SASRec also falls back when it cannot score a history (no item it knows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
from service_helpers import SHARED_REDIS, assert_error, history, popular_order, tiny_settings, write_sasrec_checkpoint

from indexer.store import CURRENT_FILE, ItemStore
from model.rankers.llm import UserState
from service.cache import META_TYPES, CacheEntry, decode, encode
from service.rate import usable_rating

UNSEEN = ("7", "8")  # catalog items the checkpoint never saw


@pytest.fixture
def checkpoint(catalog, tmp_path) -> Path:
    return write_sasrec_checkpoint(tmp_path / "sasrec", [i for i in catalog.ids() if i not in UNSEEN])


def popular_ids(catalog, exclude: str, k: int) -> list[str]:
    return [i for i in popular_order(catalog) if i not in exclude.split()][:k]


@pytest.mark.parametrize("damage", ["garbage weights", "network of another shape"])
def test_a_corrupt_sasrec_checkpoint_is_a_503_and_the_fallback_goes_on_to_popular(
    serve, index_dir, checkpoint, faulty_engine, catalog, damage
):
    if damage == "garbage weights":
        (checkpoint / "model.safetensors").write_bytes(b"\x00not safetensors" * 10)
    else:
        meta = json.loads((checkpoint / "meta.json").read_text())
        meta["network"]["hidden"] = 32
        (checkpoint / "meta.json").write_text(json.dumps(meta))
    server = serve(tiny_settings(index_dir, sasrec_checkpoint=checkpoint), faulty_engine)
    asked = server.client.post("/recommend", json={"history": history("1"), "ranker": "sasrec"})
    assert "checkpoint cannot be loaded" in assert_error(asked, 503, "not_ready", "ranker")["message"]

    faulty_engine.error = RuntimeError("engine down")
    fallback = server.client.post("/recommend", json={"history": history("1", "2"), "k": 4, "ranker": "direct"})
    assert fallback.status_code == 200, fallback.text
    data = fallback.json()
    assert (data["ranker"], data["fallback"]) == ("popular", "engine_error")
    assert [i["item_id"] for i in data["items"]] == popular_ids(catalog, "1 2", 4)


@pytest.mark.parametrize(
    "ids", [5, [["1"]], [["1", "x"]], [[1, 0]], [["1", -1]], {"1": 0}, [["1", 0], ["1", 1]]],
    ids=["not-a-list", "short-pair", "text-number", "number-id", "negative", "object", "repeated-id"],
)
def test_a_malformed_id_map_is_a_503_naming_it(serve, index_dir, tiny_engine, ids):
    folder = index_dir / "versions" / (index_dir / CURRENT_FILE).read_text().strip()
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, "ids": ids}))
    server = serve(tiny_settings(index_dir), tiny_engine)
    error = assert_error(server.client.get("/readyz"), 503, "not_ready")
    assert "id map" in error["message"], error
    assert_error(server.client.post("/recommend", json={"history": history("1")}), 503, "not_ready")


@pytest.mark.parametrize("vector", ["nan", "the index center"])
@pytest.mark.parametrize("ranker", ["reasoning", "direct"])
def test_an_unusable_user_vector_falls_back_and_is_not_cached(serve, index_dir, faulty_engine, catalog, vector,
                                                              ranker, redis_prefix):
    center = ItemStore.load(index_dir).center  # a vector equal to the center has no direction once centered
    faulty_engine.user_vector = np.full(faulty_engine.hidden_size, np.nan, np.float32) if vector == "nan" else center
    server = serve(tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix), faulty_engine)
    body = {"history": history("1", "2"), "k": 3, "ranker": ranker}
    response = server.client.post("/recommend", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["ranker"], data["fallback"]) == ("popular", "engine_error")
    assert [i["item_id"] for i in data["items"]] == popular_ids(catalog, "1 2", 3)

    faulty_engine.user_vector = None
    healed = server.client.post("/recommend", json=body).json()
    assert (healed["ranker"], healed["fallback"], healed["cached"]) == (ranker, None, False)


def poison(prefix: str, value: bytes) -> int:
    """Overwrite every cache entry under `prefix`, as someone with access to Redis could; returns how many."""
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = list(client.scan_iter(match=prefix + "*"))
    for key in keys:
        client.set(key, value)
    client.close()
    return len(keys)


def planted_state(meta_fields: str) -> bytes:
    """A cache value holding a usable user state of the tiny model (64 wide) beside the given meta fields."""
    return b'{"meta": {' + meta_fields.encode() + b'}, "dim": 64}\n' + np.ones(64, "<f4").tobytes()


PLANTED = {
    "rate without a rating": (b'{"meta": {"reasoning": "x", "parsed": true}, "dim": null}\n', "/rate"),
    "rating out of range": (b'{"meta": {"rating": 99, "reasoning": "x", "parsed": true}, "dim": null}\n', "/rate"),
    "vector of another size": (b'{"meta": {"reasoning": "x"}, "dim": 2}\n' + np.ones(2, "<f4").tobytes(), "/recommend"),
    "NaN vector": (b'{"meta": {"reasoning": "x"}, "dim": 64}\n' + np.full(64, np.nan, "<f4").tobytes(), "/recommend"),
    "no vector": (b'{"meta": {"reasoning": "x"}, "dim": null}\n', "/recommend"),
    # the right vector, a field of the wrong type (each was served, or a 500, before the cache checked types)
    "reasoning as a number": (planted_state('"reasoning": 5, "generated_tokens": 3, "wrote_marker": false'),
                              "/recommend"),
    "token count as text": (planted_state('"reasoning": "x", "generated_tokens": "many", "wrote_marker": false'),
                            "/recommend"),
    "marker flag as text": (planted_state('"reasoning": "x", "generated_tokens": 3, "wrote_marker": "no"'),
                            "/recommend"),
    "parsed flag as a number": (b'{"meta": {"rating": 4, "reasoning": "x", "parsed": 1}, "dim": null}\n', "/rate"),
}


@pytest.mark.parametrize("planted", PLANTED, ids=list(PLANTED))
def test_planted_cache_entries_are_ignored_and_recomputed(gateway, redis_prefix, planted):
    value, path = PLANTED[planted]
    body = {"history": history("1", "2"), "item_id": "3"} if path == "/rate" else {"history": history("1", "2")}
    assert gateway.client.post(path, json=body).status_code == 200
    assert poison(redis_prefix, value) == 1
    response = gateway.client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False and response.json()["fallback"] is None
    assert gateway.metric("reasonrec_cache_total", result="invalid") == 1
    assert gateway.client.post(path, json=body).json()["cached"] is True  # the recomputed entry replaced it


@pytest.mark.parametrize("history_entries", [[{"title": "A Film Nobody Indexed"}], [{"item_id": u} for u in UNSEEN]],
                         ids=["titles-only", "ids-it-never-saw"])
def test_sasrec_falls_back_when_it_cannot_score_the_history(serve, index_dir, checkpoint, tiny_engine, catalog,
                                                            history_entries):
    server = serve(tiny_settings(index_dir, sasrec_checkpoint=checkpoint), tiny_engine)
    response = server.client.post("/recommend", json={"history": history_entries, "k": 4, "ranker": "sasrec"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["ranker"], data["fallback"]) == ("popular", "cannot_score")
    known = " ".join(str(entry.get("item_id")) for entry in history_entries)
    assert [i["item_id"] for i in data["items"]] == popular_ids(catalog, known, 4)
    assert server.metric("reasonrec_fallback_total", reason="cannot_score") == 1


def test_every_field_the_producers_cache_has_a_declared_type():
    """What the cache checks on the way back (`META_TYPES`) covers every field the rankers and /rate write."""
    written = CacheEntry(UserState(np.ones(4, np.float32), "why", 7, True).meta())
    assert set(written.meta) <= set(META_TYPES) and decode(encode(written)) == written
    rate_entry = CacheEntry({"rating": 4.5, "reasoning": None, "parsed": False})
    assert usable_rating(rate_entry) and set(rate_entry.meta) <= set(META_TYPES)
    with pytest.raises(ValueError, match="generated_tokens"):
        decode(encode(CacheEntry({**written.meta, "generated_tokens": True})))
