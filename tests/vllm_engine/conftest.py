"""Fixtures of the vLLM engine tests.

Fast tests (in `make test`) run the client against `standin.StandIn` servers that compute with the tiny model.
The real tests (`test_*_real.py`) start the two real vLLM servers once per session with the virtualenv's
python named by `REASONREC_VLLM_PYTHON` (`make test-vllm` sets it); without it they are skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from standin import StandIn, free_port
from vllm_helpers import RealServers

from model.engines.loading import LoadedModel, load_model

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))  # service_helpers, shared with the gateway tests

VLLM_PYTHON_ENV = "REASONREC_VLLM_PYTHON"
REAL_MODULES = ("test_parity_real.py", "test_gateway_real_vllm.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(VLLM_PYTHON_ENV):
        return
    skip = pytest.mark.skip(reason=f"needs the real vLLM servers: run `make test-vllm` (sets {VLLM_PYTHON_ENV})")
    for item in items:
        if item.path.name in REAL_MODULES:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_loaded() -> LoadedModel:
    return load_model("tiny")


StandInFactory = Callable[..., StandIn]


@pytest.fixture
def standin(tiny_loaded) -> Iterator[StandInFactory]:
    """standin(loaded=tiny) -> a running stand-in server; all are stopped after the test."""
    running: list[StandIn] = []

    def factory(loaded: LoadedModel | None = None) -> StandIn:
        server = StandIn(loaded or tiny_loaded).start()
        running.append(server)
        return server

    yield factory
    for server in running:
        server.stop()


@pytest.fixture(scope="session")
def real_servers(tmp_path_factory) -> Iterator[RealServers]:
    """Both real vLLM servers on the converted SmolLM2, the generation server with the shipped reasoning adapter as
    LoRA, started together (or the running ones named by REASONREC_TEST_VLLM_URLS="<generate url>,<pool url>",
    which must serve that same folder and adapter)."""
    from indexer.core.paths import SHIPPED
    from model.engines.loading import default_model_dir, materialize_smollm2
    from model.engines.vllm_launch import launch, stop, wait_healthy

    model_dir = materialize_smollm2(default_model_dir())
    adapter = SHIPPED / "ml-100k" / "reasoning"
    if running := os.environ.get("REASONREC_TEST_VLLM_URLS"):
        generate_url, pool_url = running.split(",")
        yield RealServers(generate_url, pool_url, model_dir, adapter)
        return
    logs = tmp_path_factory.mktemp("vllm-logs")
    urls, processes = {}, {}
    try:
        for role in ("generate", "pool"):
            port = free_port()
            urls[role] = f"http://127.0.0.1:{port}"
            log = (logs / f"{role}.log").open("wb")
            processes[role] = launch(os.environ[VLLM_PYTHON_ENV], role, model_dir, port, log, adapter=adapter)
        for role, process in processes.items():
            wait_healthy(urls[role], process)
        yield RealServers(urls["generate"], urls["pool"], model_dir, adapter)
    finally:
        for process in processes.values():
            stop(process)
