"""Replica handling of the vLLM client: spreading, failover on 5xx and refused connections, recovery through
/health, timeouts that are not retried, and a fast failure when no replica is left."""

from __future__ import annotations

import time

import pytest
from standin import free_port
from vllm_helpers import client_for

from model.engines.replicas import ReplicasUnavailable, ReplicaTimeout
from model.engines.vllm_engine import VllmTimeouts

FAST = VllmTimeouts(connect_s=1.0, read_s=5.0, retry_after_s=0.2)


def embeds(server) -> int:
    return server.calls["/v1/embeddings"]


@pytest.fixture
def two(standin, tiny_loaded):
    a, b = standin(), standin()
    return a, b, client_for(tiny_loaded, [a.url, b.url], [a.url, b.url], FAST)


def test_requests_are_spread_over_healthy_replicas(two):
    a, b, client = two
    for _ in range(6):
        client.embed_items(["x"])
    assert embeds(a) == embeds(b) == 3


def test_a_failing_replica_is_taken_out_and_the_request_retried_elsewhere(two):
    a, b, client = two
    a.faults.status, a.faults.health_status = 503, 503
    for _ in range(4):
        assert client.embed_items(["x"]).shape == (1, client.hidden_size)
    assert embeds(a) == 1 and embeds(b) == 4
    assert client.pooling.healthy_count() == 1 and "HTTP 503" in client.pooling.describe()


def test_a_replica_comes_back_once_its_health_check_passes(two):
    a, _, client = two
    a.faults.status, a.faults.health_status = 503, 503
    client.embed_items(["x"])
    time.sleep(FAST.retry_after_s + 0.05)
    client.embed_items(["x"])  # probed, still unhealthy: stays out
    assert a.calls["/health"] == 1 and embeds(a) == 1
    a.faults.status, a.faults.health_status = None, 200
    time.sleep(FAST.retry_after_s + 0.05)
    for _ in range(4):
        client.embed_items(["x"])
    assert client.pooling.healthy_count() == 2 and embeds(a) >= 2


def test_a_stopped_replica_fails_over_and_rejoins_after_restart(two):
    a, _, client = two
    a.stop()
    for _ in range(3):
        client.reason(["hi"], 2)
    assert client.generation.healthy_count() == 1 and client.pooling.healthy_count() == 1
    a.start()  # same port
    time.sleep(FAST.retry_after_s + 0.05)
    for _ in range(4):
        client.embed_items(["x"])
    assert client.pooling.healthy_count() == 2 and embeds(a) >= 1


def test_no_replica_left_fails_fast(tiny_loaded):
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = client_for(tiny_loaded, dead, dead, FAST)
    start = time.monotonic()
    with pytest.raises(ReplicasUnavailable, match="no pooling replica"):
        client.embed_items(["x"])
    with pytest.raises(ReplicasUnavailable, match="out of rotation"):
        client.embed_items(["x"])  # both marked down: refused without a connection attempt
    assert time.monotonic() - start < 2.0


def test_a_slow_replica_times_out_without_a_retry(standin, tiny_loaded):
    slow, spare = standin(), standin()
    slow.faults.delay_s = 1.0
    client = client_for(tiny_loaded, [slow.url, spare.url], [slow.url, spare.url], VllmTimeouts(read_s=0.3))
    client.pooling.replicas[1].inflight = 1  # make the slow one the least busy, so it is picked first
    with pytest.raises(ReplicaTimeout):
        client.embed_items(["x"])
    assert embeds(spare) == 0 and client.pooling.healthy_count() == 2
