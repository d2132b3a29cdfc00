"""A Redis that goes away mid-run: requests still succeed uncached, errors are counted, caching resumes after.

Runs a private `redis-server` on a free port (never the shared one on 6379) and kills it mid-run.
"""

from __future__ import annotations

import shutil
import time

import pytest
from private_redis import free_port, private_redis, stop_redis
from service_helpers import history, tiny_settings

from service.cache import REDIS_RETRY_AFTER_S

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


def test_requests_survive_redis_going_away(serve, index_dir, tiny_engine):
    port = free_port()
    settings = tiny_settings(index_dir, redis_url=f"redis://127.0.0.1:{port}/0", cache_timeout_s=0.2)
    body = {"history": history("1", "2"), "k": 4}
    with private_redis(port) as proc:
        server = serve(settings, tiny_engine)
        assert server.client.post("/recommend", json=body).json()["cached"] is False
        assert server.client.post("/recommend", json=body).json()["cached"] is True
        stop_redis(proc)

        for _ in range(4):
            response = server.client.post("/recommend", json=body)
            assert response.status_code == 200 and response.json()["cached"] is False
            assert response.json()["timings_ms"]["cache"] < 1000
        rated = server.client.post("/rate", json={"history": history("3"), "item_id": "4"})
        assert rated.status_code == 200 and rated.json()["parsed"] is True
        errors = server.metric("reasonrec_cache_total", result="error")
        assert errors >= 5  # each request's lookup is an error (tried, or skipped while backing off)
        ready = server.client.get("/readyz")
        assert ready.status_code == 200 and "unreachable" in ready.json()["cache"]

    with private_redis(port):  # Redis comes back on the same address: the cache is used again
        time.sleep(REDIS_RETRY_AFTER_S + 0.1)
        assert server.client.post("/recommend", json=body).json()["cached"] is False
        assert server.client.post("/recommend", json=body).json()["cached"] is True
        assert server.metric("reasonrec_cache_total", result="error") == errors
