"""Many gateway replicas, one catalog (service.catalog_sync): two gateway processes on loopback share the real
Redis under a private key prefix; an item hot-added or removed on one is seen by the other within a second,
and a restarted replica comes back with every change."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from private_redis import free_port, private_redis
from processes import GatewayProcess, replica
from service_helpers import SHARED_REDIS, admin_headers, history, tiny_settings

PROPAGATION_S = 1.0


@pytest.fixture
def replicas(pristine_index, redis_prefix, tmp_path) -> Iterator[list[GatewayProcess]]:
    """Two replicas, each with its own copy of the same base index (like two pods), sharing Redis."""
    started = []
    for name in ("a", "b"):
        index = Path(shutil.copytree(pristine_index, tmp_path / f"index-{name}"))
        started.append(replica(index, redis_prefix, tmp_path / f"{name}.log").start())
    for one in started:
        one.wait_ready()
    yield started
    for one in started:
        one.stop()


def wait_for(check, timeout_s: float = PROPAGATION_S) -> float:
    """Seconds until `check()` is true; fails past the timeout."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, f"not seen within {timeout_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_changes_reach_the_other_replica_within_a_second_and_survive_restarts(replicas):
    a, b = replicas
    new = {"item_id": "hot-1", "title": "A Hot New Film", "genres": ["Drama"], "year": 2026}
    added = httpx.post(a.url + "/admin/items", json={"items": [new]}, headers=admin_headers(), timeout=30)
    assert added.status_code == 200, added.text
    assert "hot-1" in a.item_ids()  # searchable on the writer when the call returns
    wait_for(lambda: httpx.get(b.url + "/items/hot-1").status_code == 200)
    assert "hot-1" in b.item_ids()

    removed = httpx.delete(b.url + "/admin/items/1", headers=admin_headers(), timeout=30)
    assert removed.status_code == 200, removed.text
    wait_for(lambda: httpx.get(a.url + "/items/1").status_code == 404)
    version = removed.json()["index_version"]
    assert httpx.get(a.url + "/readyz").json()["index_version"] == version

    b.stop()
    b.start().wait_ready()
    assert httpx.get(b.url + "/items/hot-1").status_code == 200 and httpx.get(b.url + "/items/1").status_code == 404
    assert httpx.get(b.url + "/readyz").json()["index_version"] == version
    assert b.item_ids() == a.item_ids()


def test_without_redis_a_synced_replica_is_not_ready(serve, index_dir, tiny_engine):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = serve(tiny_settings(index_dir, redis_url=dead, catalog_sync=True), tiny_engine)
    ready = server.client.get("/readyz")
    assert ready.status_code == 503 and "catalog sync" in ready.json()["error"]["message"]


def test_the_catalog_lives_apart_from_the_cache_and_survives_its_eviction(serve, index_dir, tiny_engine):
    """The cache's Redis evicts (maxmemory, allkeys-lru); the catalog's must not lose a change: with
    REASONREC_CATALOG_REDIS_URL the stream is written there, never to the cache's Redis, so evicting (here:
    flushing) every cache key leaves the shared catalog whole for the next replica."""
    eviction = ["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"]
    with private_redis(extra_args=eviction) as cache, private_redis(extra_args=["--maxmemory-policy", "noeviction"]) \
            as catalog:
        urls = {"redis_url": redis_url(cache), "catalog_redis_url": redis_url(catalog)}
        settings = tiny_settings(index_dir, catalog_sync=True, **urls)
        first = serve(settings, tiny_engine)
        new = {"items": [{"item_id": "kept-1", "title": "Kept", "genres": ["Drama"]}]}
        assert first.client.post("/admin/items", json=new, headers=admin_headers()).status_code == 200
        assert first.client.post("/recommend", json={"history": history("1"), "ranker": "direct"}).status_code == 200
        cache_client, catalog_client = (redis.Redis.from_url(url) for url in urls.values())
        assert [k for k in cache_client.scan_iter() if b"catalog:" in k] == []  # only cached states there
        assert cache_client.dbsize() >= 1 and len([k for k in catalog_client.scan_iter() if b"catalog:" in k]) == 1
        cache_client.flushall()
        second = serve(settings, tiny_engine)
        assert second.client.get("/items/kept-1").status_code == 200
        assert second.client.get("/readyz").json()["index_version"] == first.client.get("/readyz").json()[
            "index_version"]


def redis_url(proc) -> str:
    return f"redis://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}/0"


def test_the_stream_is_trimmed_behind_snapshots_and_replicas_agree(serve, index_dir, tiny_engine, redis_prefix):
    """Every `catalog_snapshot_every` entries the publishing replica snapshots the catalog and trims the stream, so
    a replica that starts replays the snapshot and a few entries, not the history; a running replica whose unread
    entries were trimmed (it lost the race to the trim) reloads its base index and catches up from the snapshot."""
    settings = tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, catalog_sync=True,
                             catalog_snapshot_every=2)
    writer, follower = serve(settings, tiny_engine), serve(settings, tiny_engine)
    for n in range(7):
        new = {"items": [{"item_id": f"snap-{n}", "title": f"Snapshot {n}", "genres": ["Drama"]}]}
        assert writer.client.post("/admin/items", json=new, headers=admin_headers()).status_code == 200
    assert writer.client.delete("/admin/items/snap-0", headers=admin_headers()).status_code == 200
    assert writer.client.delete("/admin/items/1", headers=admin_headers()).status_code == 200  # a base item
    client = redis.Redis.from_url(SHARED_REDIS)
    [key] = [k for k in client.scan_iter(match=f"{redis_prefix}catalog:*") if not k.endswith(b":snapshot")]
    assert client.xlen(key) < 2 and client.hget(key + b":snapshot", "last_id") is not None  # 9 entries written
    client.close()

    expected = writer.client.get("/readyz").json()["index_version"]
    assert expected == 10  # the base version 1 and nine changes
    late = serve(settings, tiny_engine)
    for other in (follower, late):
        wait_for(lambda r=other: r.client.get("/readyz").json().get("index_version") == expected, timeout_s=5)
        assert other.client.get("/items/snap-6").status_code == 200
        assert {other.client.get(f"/items/{i}").status_code for i in ("snap-0", "1")} == {404}
