"""A pool of HTTP replicas of one server role (e.g. every vLLM generation server), used by `model.engines.vllm_engine`.

Requests go to the healthy replica with the fewest requests in flight (ties: round robin), over one shared
`httpx.Client` (thread-safe, keeps connections alive). Failure handling, chosen so that retrying is safe:

- the replica could not be reached, dropped the connection, or answered 5xx: it is taken out of rotation
  and the same request is tried on the next healthy replica (every request the engine sends is a pure
  function of its body: greedy completions and embeddings have no side effects, so a repeat is harmless);
- the replica did not answer within the read timeout: no retry (it may still be working on it, and a
  second copy would only double the load; the caller's deadline has passed anyway), `ReplicaTimeout`;
- 4xx: the request itself is wrong (e.g. a prompt over the server's context length): `ReplicaRequestError`,
  never retried, the replica stays in rotation.

A replica that was taken out is put back once its `/health` answers 200: it is probed (with a short timeout)
by the first request that comes along `retry_after_s` after it failed (or after its last failed probe), so
recovery needs no background thread.
When no replica can take a request, `ReplicasUnavailable` is raised at once (the gateway then falls back).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"


class ReplicaError(RuntimeError):
    """Base of the errors a replica pool raises."""


class ReplicasUnavailable(ReplicaError):
    """No replica of the role could serve the request (all down, or each failed in turn)."""


class ReplicaTimeout(ReplicaError):
    """The chosen replica did not answer within the read timeout (not retried)."""


class ReplicaRequestError(ReplicaError):
    """A replica refused the request with a 4xx status (not retried)."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"{url} answered {status}: {detail[:500]}")
        self.status = status


@dataclass
class Replica:
    """One server's base URL and what the pool knows about it."""

    url: str
    healthy: bool = True
    failed_at: float = 0.0
    inflight: int = 0
    last_error: str = ""


class ReplicaPool:
    """Spreads JSON POSTs over the replicas of one role; see the module docstring for the failure rules."""

    def __init__(
        self, role: str, urls: Sequence[str], client: httpx.Client, *, retry_after_s: float = 5.0,
        probe_timeout_s: float = 1.0,
    ) -> None:
        if not urls:
            raise ValueError(f"the {role} role needs at least one replica URL")
        self.role = role
        self.replicas = [Replica(url.rstrip("/")) for url in urls]
        self.client = client
        self.retry_after_s = retry_after_s
        self.probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON to `path` on one replica and return the decoded JSON answer."""
        errors: list[str] = []
        for replica in self._attempt_order():
            try:
                response = self.client.post(replica.url + path, json=payload)
            except httpx.ConnectTimeout:
                self._mark_down(replica, "connect timeout")
            except httpx.TimeoutException as exc:  # read/write: the replica is slow, not gone; pool: we are busy
                raise ReplicaTimeout(f"{self.role} replica {replica.url}: {type(exc).__name__} on {path}") from exc
            except httpx.TransportError as exc:
                self._mark_down(replica, f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 400:
                    self._mark_up(replica)
                    return response.json()
                if response.status_code < 500:
                    raise ReplicaRequestError(replica.url + path, response.status_code, response.text)
                self._mark_down(replica, f"HTTP {response.status_code}: {response.text[:200]}")
            finally:
                with self._lock:
                    replica.inflight -= 1
            errors.append(f"{replica.url}: {replica.last_error}")
        down = "; ".join(errors) or "every replica is out of rotation: " + self.describe()
        raise ReplicasUnavailable(f"no {self.role} replica could serve {path} ({down})")

    def describe(self) -> str:
        """One line per replica state, for logs and readiness messages."""
        return ", ".join(f"{r.url} {'up' if r.healthy else 'down (' + r.last_error + ')'}" for r in self.replicas)

    def healthy_count(self) -> int:
        return sum(r.healthy for r in self.replicas)

    # ---- internals -------------------------------------------------------------------------------------------

    def _attempt_order(self) -> Iterator[Replica]:
        """Each healthy replica at most once, least busy first (replicas due for a probe are probed first).

        The yielded replica's in-flight count is already raised; `post` lowers it again.
        """
        tried: set[int] = set()
        while True:
            replica = self._pick(tried)
            if replica is None:
                return
            tried.add(id(replica))
            yield replica

    def _pick(self, tried: set[int]) -> Replica | None:
        self._probe_due()
        with self._lock:
            healthy = [r for r in self.replicas if r.healthy and id(r) not in tried]
            if not healthy:
                return None
            start = next(self._turn) % len(healthy)
            chosen = min(healthy[start:] + healthy[:start], key=lambda r: r.inflight)
            chosen.inflight += 1
            return chosen

    def _probe_due(self) -> None:
        """Probe each replica that has been out for `retry_after_s`; the claim restarts its wait, so concurrent
        requests do not probe it twice, and a failed probe keeps it out for another `retry_after_s`."""
        with self._lock:
            now = time.monotonic()
            due = [r for r in self.replicas if not r.healthy and now - r.failed_at >= self.retry_after_s]
            for replica in due:
                replica.failed_at = now
        for replica in due:  # outside the lock: other threads keep using the healthy replicas meanwhile
            self._probe(replica)

    def _probe(self, replica: Replica) -> None:
        """GET /health with a short timeout; a 200 puts the replica back in rotation."""
        try:
            ok = self.client.get(replica.url + HEALTH_PATH, timeout=self.probe_timeout_s).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            self._mark_up(replica)

    def _mark_down(self, replica: Replica, why: str) -> None:
        with self._lock:
            was_healthy, replica.healthy = replica.healthy, False
            replica.failed_at, replica.last_error = time.monotonic(), why
        if was_healthy:
            log.warning("%s replica %s taken out of rotation: %s", self.role, replica.url, why)

    def _mark_up(self, replica: Replica) -> None:
        with self._lock:
            was_down, replica.healthy, replica.last_error = not replica.healthy, True, ""
        if was_down:
            log.info("%s replica %s is back in rotation", self.role, replica.url)
