"""Private `redis-server` processes for the tests: on a free loopback port, no persistence (`--save ""`).

Used three ways: by `tests/conftest.py` when nothing answers at the configured test Redis (a fresh machine), by
tests that kill or restart Redis (never the shared one), and by tests that need a Redis with a password/ACL.
Each process is stopped by whoever started it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a Redis at `url` answers PING (any error, including a refused connection, is False)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(port: int, extra_args: Sequence[str] = (), password: str | None = None) -> subprocess.Popen[bytes]:
    """Start `redis-server` on 127.0.0.1:`port` without persistence and wait until it answers PING.

    `extra_args` go after the defaults (e.g. an ACL); `password` is what the wait loop authenticates with.
    Raises RuntimeError when the binary is missing or the server does not come up.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install -y redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                client.ping()
                return proc
            except redis.AuthenticationError:
                return proc  # it answers; whoever calls decides how to log in
            except redis.RedisError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stop_redis(proc)
                    raise RuntimeError(f"redis-server on port {port} did not start: {exc}") from exc
                time.sleep(0.05)
    finally:
        client.close()


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Kill one server this process started (SIGKILL: it holds nothing worth saving) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@contextmanager
def private_redis(
    port: int | None = None, extra_args: Sequence[str] = (), password: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A private Redis for the block (port: a free one unless given); `proc.args` shows the port."""
    proc = start_redis(port or free_port(), extra_args, password)
    try:
        yield proc
    finally:
        stop_redis(proc)
