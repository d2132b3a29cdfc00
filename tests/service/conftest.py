"""Fixtures of the gateway tests: the tiny index (built once, copied per test), servers that are stopped at the
end of each test, a private key prefix on the shared Redis (cleaned up), and the fault-injecting engine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from service_helpers import (
    SHARED_REDIS,
    FaultyEngine,
    Server,
    build_index,
    make_catalog,
    private_prefix,
    start_server,
    tiny_settings,
)

from indexer.core.catalog import Catalog
from model.engines.base import Engine
from service.settings import Settings

ServerFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture(scope="session")
def pristine_index(tiny_engine, catalog, tmp_path_factory) -> Path:
    return build_index(tiny_engine, catalog, tmp_path_factory.mktemp("pristine-index"))


@pytest.fixture
def index_dir(pristine_index, tmp_path) -> Path:
    """A private copy of the tiny index, free to change."""
    return Path(shutil.copytree(pristine_index, tmp_path / "index"))


@pytest.fixture
def faulty_engine(tiny_engine) -> FaultyEngine:
    return FaultyEngine(tiny_engine)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A private key prefix on the shared Redis; every key under it is deleted afterwards."""
    with private_prefix() as prefix:
        yield prefix


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """serve(settings, engine=None, app=None) -> a running Server; every one still running is stopped after the test."""
    running: list[Server] = []

    def factory(settings: Settings, engine: Engine | None = None, app: FastAPI | None = None) -> Server:
        server = start_server(settings, engine, app)
        running.append(server)
        return server

    yield factory
    for server in running:
        if server.thread.is_alive():
            server.stop()


@pytest.fixture
def gateway(serve, index_dir, tiny_engine, redis_prefix) -> Server:
    """The standard gateway: tiny engine, a private index copy, the shared Redis under a private prefix."""
    return serve(tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix), tiny_engine)
