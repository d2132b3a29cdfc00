"""Helpers of the gateway tests (used by conftest.py and the test modules): an ML-100k-like catalog and its
index, real uvicorn servers on free loopback ports (each in a thread), a fault-injecting engine, envelope checks.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import torch
import uvicorn
from fastapi import FastAPI

from indexer.core.catalog import Catalog, Item
from indexer.store import ItemStore
from model.engines.base import Engine, Generation, Reasoning
from model.networks.sasrec import SasrecConfig, SasrecNet, SasrecScorer
from model.prompts import item_prompt
from service.main import create_app
from service.settings import Settings

SHARED_REDIS = os.environ.get("REASONREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # tests/conftest.py
ADMIN_TOKEN = "test-admin-token"
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation", "Western")


def make_catalog(n: int = 36) -> Catalog:
    """n MovieLens-like items "1".."n"; rating counts repeat (ties) so popularity order tests the id tiebreak."""
    return Catalog.of(
        Item(
            item_id=str(i), title=f"Movie Number {i}", genres=(GENRES[i % 9], GENRES[(i * 4) % 9]), year=1950 + i,
            avg_rating=round(2.0 + (i % 7) * 0.45, 2), rating_count=(i * 37) % 11 * 10,
        )
        for i in range(1, n + 1)
    )


def build_index(engine: Engine, catalog: Catalog, root: Path) -> Path:
    vectors = engine.embed_items([item_prompt(item) for item in catalog])
    ItemStore.create(catalog, vectors, engine.fingerprint, dataset="ml-test").save(root)
    return root


def write_sasrec_checkpoint(folder: Path, vocabulary: Sequence[str], status: str | None = None) -> Path:
    """An untrained (seeded) small SASRec checkpoint over `vocabulary`, as `reasonrec train-sasrec` saves one
    (with `status` in its metadata when given: "done" for a finished run)."""
    torch.manual_seed(0)
    net = SasrecNet(SasrecConfig(n_items=len(vocabulary), max_len=16, hidden=16))
    SasrecScorer(net, list(vocabulary)).save(folder, {"dataset": "test"} | ({"status": status} if status else {}))
    return folder


def popular_order(catalog: Catalog) -> list[str]:
    return [item.item_id for item in sorted(catalog, key=lambda item: (-item.rating_count, item.item_id))]


class FaultyEngine:
    """Fault injection around a real engine: `delay_s` sleeps before every call, `error` is raised instead of
    answering, `garble` replaces generated text (to produce unparseable ratings), `user_vector` replaces every
    user vector (e.g. NaN, as a broken model gives). Change them at any time."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.reasoning_adapter = inner.reasoning_adapter
        self.hidden_size = inner.hidden_size
        self.delay_s = 0.0
        self.error: Exception | None = None
        self.garble: str | None = None
        self.user_vector: np.ndarray | None = None

    def _fault(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        self._fault()
        out = self.inner.reason(user_texts, max_new_tokens)
        return out if self.user_vector is None else [replace(r, vector=self.user_vector.copy()) for r in out]

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        self._fault()
        out = self.inner.embed_direct(user_texts)
        return out if self.user_vector is None else np.tile(self.user_vector, (len(out), 1))

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        self._fault()
        return self.inner.embed_items(item_texts)

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]:
        self._fault()
        out = self.inner.generate(user_texts, assistant_prefixes, max_new_tokens, stop)
        return out if self.garble is None else [Generation(self.garble, g.generated_tokens, True) for g in out]

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray:
        self._fault()
        return self.inner.choice_probs(user_texts, assistant_prefixes, choices)


@dataclass
class Server:
    """A running gateway; `client` talks to it over real HTTP."""

    url: str
    client: httpx.Client
    uvicorn_server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.client.close()
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the server did not stop"

    def metric(self, name: str, **labels: str) -> float:
        """Current value of one sample in /metrics (0 when absent)."""
        return metric_value(self.client.get("/metrics").text, name, **labels)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def start_server(settings: Settings, engine: Engine | None, app: FastAPI | None = None) -> Server:
    """Start the app for `settings` (or `app`, built by the caller) under uvicorn in a thread, on a free loopback
    port; wait until it serves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app or create_app(settings, engine=engine), log_config=None, lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start (see the log above)")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    return Server(url, httpx.Client(base_url=url, timeout=60), server, thread)


@contextmanager
def private_prefix(name: str = "test") -> Iterator[str]:
    """A private key prefix on the shared test Redis; every key under it is deleted afterwards."""
    prefix = f"reasonrec-{name}-{secrets.token_hex(6)}:"
    client = redis.Redis.from_url(SHARED_REDIS, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"these tests need a Redis at {SHARED_REDIS} (REASONREC_TEST_REDIS_URL), or the redis-server "
                    f"binary to start one (apt-get install -y redis-server): {exc}")
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def tiny_settings(index_dir: Path, **overrides: object) -> Settings:
    """Fast-test settings: tiny model, small token budgets, admin token set, the given index."""
    values: dict[str, object] = {
        "model": "tiny", "index_dir": index_dir, "default_reasoning_tokens": 8, "max_reasoning_tokens": 32,
        "rating_tokens_per_tag": 4, "admin_token": ADMIN_TOKEN, "request_timeout_s": 30.0, "default_artifacts": False,
    }
    return Settings(**{**values, **overrides})


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def history(*item_ids: str, rating: float = 4.0) -> list[dict[str, object]]:
    """History entries for catalog ids, an hour apart, all with the same rating."""
    start = 1_700_000_000
    return [{"item_id": i, "rating": rating, "timestamp": start + 3600 * n} for n, i in enumerate(item_ids)]


def assert_error(response: httpx.Response, status: int, error_type: str, param: str | None = None) -> dict:
    """The response is the error envelope with this status, type and param; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "param"}, body
    assert body["error"]["type"] == error_type, body
    assert body["error"]["param"] == param, body
    assert body["error"]["message"], body
    assert response.headers["x-request-id"]
    return body["error"]
