"""The test session's Redis (tests/conftest.py): on a machine where nothing answers at the configured URL, the
session starts a private `redis-server` on a free port, the service tests use it, and it is gone afterwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from private_redis import free_port, redis_answers

TESTS = Path(__file__).parent


def test_the_session_redis_answers():
    url = os.environ["REASONREC_TEST_REDIS_URL"]
    assert redis_answers(url), f"nothing answers at {url}"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_a_session_without_redis_starts_its_own_and_stops_it():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         f"{TESTS / Path(__file__).name}::test_the_session_redis_answers"],
        cwd=TESTS.parent, env={**os.environ, "REASONREC_TEST_REDIS_URL": dead}, capture_output=True, text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    started = re.search(r"started a private redis-server on port (\d+)", run.stdout)
    assert started, run.stdout
    assert not redis_answers(f"redis://127.0.0.1:{started.group(1)}/0")  # stopped with the session
