"""Shared fixtures: the tiny model engine (fast tests) and the real SmolLM2 engine (slow tests), and the Redis the
service tests use.

The service tests need a Redis at `REASONREC_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0, the one this
project's machines run), under private key prefixes. When nothing answers there (a fresh machine), the session
starts its own `redis-server` on a free port without persistence, points `REASONREC_TEST_REDIS_URL` at it, and
stops it when the session ends; only the `redis-server` binary is needed.
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from private_redis import free_port, redis_answers, start_redis, stop_redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_REDIS_ENV = "REASONREC_TEST_REDIS_URL"
DEFAULT_TEST_REDIS = "redis://127.0.0.1:6379/0"
_session_redis: subprocess.Popen[bytes] | None = None
_STARTED = pytest.StashKey[str]()

log = logging.getLogger(__name__)


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported: make sure `REASONREC_TEST_REDIS_URL` answers (see the docstring)."""
    global _session_redis
    url = os.environ.setdefault(TEST_REDIS_ENV, DEFAULT_TEST_REDIS)
    if redis_answers(url):
        return
    try:
        port = free_port()
        _session_redis = start_redis(port)
    except RuntimeError as exc:  # the tests that need Redis fail and say why; the others still run
        log.warning("no Redis at %s and none could be started: %s", url, exc)
        return
    os.environ[TEST_REDIS_ENV] = f"redis://127.0.0.1:{port}/0"
    config.stash[_STARTED] = f"nothing answered at {url}: started a private redis-server on port {port}"



def pytest_report_header(config: pytest.Config) -> str:
    return config.stash.get(_STARTED, f"test Redis: {os.environ.get(TEST_REDIS_ENV)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_redis
    if _session_redis is not None:
        stop_redis(_session_redis)
        _session_redis = None


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): tiny-model
    steps are ~50x faster than with two threads on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_engine():
    from model.engines.loading import load_model
    from model.engines.transformers_engine import TransformersEngine

    return TransformersEngine(load_model("tiny"), batch_size=4)


@pytest.fixture(scope="session")
def real_engine():
    from model.engines.loading import load_model
    from model.engines.transformers_engine import TransformersEngine

    return TransformersEngine(load_model("smollm2"), batch_size=4)
