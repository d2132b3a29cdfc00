"""Catalog-sync stream entries that cannot be applied (service.catalog_sync): whoever wrote them (a replica of
another version during a rolling upgrade, or anyone who reached Redis), each is skipped, counted and logged by
every replica; the watcher goes on, a restarted replica replays past them, and a watcher that stopped anyway
makes the replica unready."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis
from service_helpers import SHARED_REDIS, Server, assert_error, history, tiny_settings
from test_table_serving import make_table

from indexer.core.catalog import Item
from indexer.store import CURRENT_FILE, ItemStore
from model.prompts import item_prompt
from service.catalog_sync_entries import CatalogChange
from service.state import AppState

DIM = 64  # the tiny model's hidden size


def add_fields(item_id: str, vector: np.ndarray | None = None, **item_fields: object) -> dict[str, bytes]:
    """The stream fields of a well-formed add of one item (vector: a random one unless given)."""
    item = Item(item_id, f"Title {item_id}", ("Drama",), 2020)
    vectors = np.random.default_rng(0).standard_normal((1, DIM)).astype(np.float32) if vector is None else vector
    fields = CatalogChange("add", (item,), vectors).to_fields()
    if item_fields:
        fields["items"] = json.dumps([{**item.to_json(), **item_fields}]).encode()
    return fields


def bad_entries() -> dict[str, dict[str, bytes]]:
    """One entry per way an entry can be wrong, by the skip reason it must be counted under."""
    good = add_fields("never")
    nan = np.full((1, DIM), np.nan, dtype=np.float32)
    return {
        "unknown op": {**good, "op": b"rename"},
        "no vectors": {k: v for k, v in good.items() if k != "vectors"},
        "items not JSON": {**good, "items": b"[{"},
        "items not a list": {**good, "items": b'{"item_id": "x"}'},
        "title not a string": add_fields("bad-title", title=["a", "list"]),
        "empty item id": add_fields(""),
        "NaN rating": {**good, "items": good["items"].replace(b'"avg_rating": null', b'"avg_rating": NaN')},
        "wrong vector size": {**good, "dim": b"3", "vectors": np.ones((1, 3), "<f4").tobytes()},
        "vector bytes short": {**good, "vectors": good["vectors"][:-4]},
        "NaN vector": add_fields("nan", vector=nan),
        "two vectors for one item": {**good, "vectors": good["vectors"] * 2},
        "remove without id": {"op": b"remove"},
    }


def stream_key(prefix: str, index_dir) -> str:
    return f"{prefix}catalog:{(index_dir / CURRENT_FILE).read_text().strip()}"


def app_state(server: Server) -> AppState:
    return server.uvicorn_server.config.app.state.reasonrec


def wait_for(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


@pytest.fixture
def stream(redis_prefix, index_dir):
    client = redis.Redis.from_url(SHARED_REDIS)
    key = stream_key(redis_prefix, index_dir)
    yield lambda fields: client.xadd(key, fields)
    client.close()


def test_bad_entries_are_skipped_counted_and_the_watcher_goes_on(serve, index_dir, tiny_engine, redis_prefix,
                                                                 stream, caplog):
    settings = tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, catalog_sync=True)
    server = serve(settings, tiny_engine)
    assert server.client.get("/readyz").status_code == 200
    bad = bad_entries()
    for fields in bad.values():
        stream(fields)
    stream(add_fields("newer", mood="wistful"))  # a field a newer version writes: dropped, the item applied
    stream(add_fields("after-the-bad-ones"))
    wait_for(lambda: server.client.get("/items/after-the-bad-ones").status_code == 200)

    assert server.client.get("/items/newer").json()["title"] == "Title newer"
    reasons = ("malformed", "vectors", "rejected")
    skipped = sum(server.metric("reasonrec_catalog_sync_skipped_total", reason=r) for r in reasons)
    assert skipped == len(bad)
    assert sum(1 for r in caplog.records if "skipping stream entry" in r.getMessage()) == len(bad)
    for item_id in ("never", "bad-title", "nan"):
        assert_error(server.client.get(f"/items/{item_id}"), 404, "not_found", "item_id")
    assert server.client.get("/readyz").status_code == 200

    restarted = serve(settings, tiny_engine)  # a replica that starts now replays the same stream
    ready = restarted.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["index_version"] == server.client.get("/readyz").json()["index_version"]
    answer = restarted.client.post("/recommend", json={"history": history("1"), "k": 50, "ranker": "direct"})
    assert answer.status_code == 200 and "after-the-bad-ones" in {i["item_id"] for i in answer.json()["items"]}


def test_a_watcher_that_stopped_makes_the_replica_unready(serve, index_dir, tiny_engine, redis_prefix):
    settings = tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, catalog_sync=True)
    server = serve(settings, tiny_engine)
    assert server.client.get("/readyz").status_code == 200
    watcher = app_state(server).sync._watcher
    watcher.get_loop().call_soon_threadsafe(watcher.cancel)
    wait_for(watcher.done)
    error = assert_error(server.client.get("/readyz"), 503, "not_ready")
    assert "catalog sync" in error["message"] and "watch" in error["message"]


def test_a_vector_far_longer_than_the_index_rows_is_skipped_before_it_reaches_the_index(
        serve, tiny_engine, catalog, redis_prefix, tmp_path):
    """On an item-table index (inner product) a row's length scales its score for every user: one huge row, e.g.
    planted in the stream by whoever reached Redis, would top every list on every replica. It is skipped."""
    table = make_table(tiny_engine, catalog, tmp_path / "table")
    items = list(catalog)
    rows = table.index_rows(items, tiny_engine.embed_items([item_prompt(i) for i in items]))
    ItemStore.create(catalog, rows, tiny_engine.fingerprint, table=table.table_hash).save(tmp_path / "index")
    settings = tiny_settings(tmp_path / "index", table=tmp_path / "table", redis_url=SHARED_REDIS,
                             cache_prefix=redis_prefix, catalog_sync=True)
    server = serve(settings, tiny_engine)
    assert server.client.get("/readyz").status_code == 200
    longest = float(np.linalg.norm(rows, axis=1).max())
    direction = rows[:1] / np.linalg.norm(rows[:1])
    client = redis.Redis.from_url(SHARED_REDIS)
    key = stream_key(redis_prefix, tmp_path / "index")
    for item_id, length in (("huge", 1e6 * longest), ("over-the-bound", 4.5 * longest), ("long-but-fine", longest)):
        fields = CatalogChange("add", (Item(item_id, f"Title {item_id}", ("Drama",), 2020),),
                               (direction * length).astype(np.float32)).to_fields()
        client.xadd(key, fields)
    client.close()
    wait_for(lambda: server.client.get("/items/long-but-fine").status_code == 200)
    assert server.metric("reasonrec_catalog_sync_skipped_total", reason="vectors") == 2
    for item_id in ("huge", "over-the-bound"):
        assert_error(server.client.get(f"/items/{item_id}"), 404, "not_found", "item_id")
    top = server.client.post("/recommend", json={"history": history("1", "2"), "k": 3, "ranker": "direct"}).json()
    assert "huge" not in {i["item_id"] for i in top["items"]}
