"""A Redis that goes away mid-run: requests still succeed uncached, errors are counted, caching resumes after.

Runs a private `redis-server` on a free port (never the shared one on 6379) and kills it mid-run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from service_helpers import history, tiny_settings

from service.cache import REDIS_RETRY_AFTER_S

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_requests_survive_redis_going_away(serve, index_dir, tiny_engine):
    port = free_port()
    settings = tiny_settings(index_dir, redis_url=f"redis://127.0.0.1:{port}/0", cache_timeout_s=0.2)
    body = {"history": history("1", "2"), "k": 4}
    with private_redis(port) as proc:
        server = serve(settings, tiny_engine)
        assert server.client.post("/recommend", json=body).json()["cached"] is False
        assert server.client.post("/recommend", json=body).json()["cached"] is True
        proc.kill()
        proc.wait(timeout=10)

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
