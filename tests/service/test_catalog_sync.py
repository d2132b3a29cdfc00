"""Many gateway replicas, one catalog (service.catalog_sync): two gateway processes on loopback share the real
Redis under a private key prefix; an item hot-added or removed on one is seen by the other within a second,
and a restarted replica comes back with every change."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import (
    ADMIN_TOKEN,
    SHARED_REDIS,
    admin_headers,
    history,
    tiny_settings,
)

PROPAGATION_S = 1.0


class Replica:
    """One gateway process (`uvicorn service.main:create_app --factory`), configured by environment."""

    def __init__(self, index_dir: Path, redis_prefix: str, log: Path) -> None:
        self.env = {
            **os.environ, "REASONREC_MODEL": "tiny", "REASONREC_INDEX_DIR": str(index_dir),
            "REASONREC_REDIS_URL": SHARED_REDIS, "REASONREC_CACHE_PREFIX": redis_prefix,
            "REASONREC_CATALOG_SYNC": "true", "REASONREC_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Replica:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory", "--port", str(port)]
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the replica did not stop on SIGTERM: {self.log.read_text()[-2000:]}") from None

    def item_ids(self) -> set[str]:
        body = {"history": history("2"), "k": 100, "ranker": "direct", "exclude_history": False}
        return {i["item_id"] for i in httpx.post(self.url + "/recommend", json=body, timeout=30).json()["items"]}


@pytest.fixture
def replicas(pristine_index, redis_prefix, tmp_path) -> Iterator[list[Replica]]:
    """Two replicas, each with its own copy of the same base index (like two pods), sharing Redis."""
    started = []
    for name in ("a", "b"):
        index = Path(shutil.copytree(pristine_index, tmp_path / f"index-{name}"))
        started.append(Replica(index, redis_prefix, tmp_path / f"{name}.log").start())
    for replica in started:
        replica.wait_ready()
    yield started
    for replica in started:
        replica.stop()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
