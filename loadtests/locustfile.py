"""Locust version of `loadtests/recommend.js`: the same request file, the same ranker mix (rankers taken in
turn), the same accounting (429 is a deliberate answer, not a failure; the server's `x-total-time` is reported
as its own entry "x-total-time [ranker]" beside the client-side "/recommend [ranker]").

Locust runs closed-loop users; `constant_throughput` paces each user, so USERS x RATE_PER_USER approximates an
arrival rate as long as answers come back faster than 1 / RATE_PER_USER (k6's arrival-rate executors keep an
open model exactly; use them for the latency report).

    REQUESTS=artifacts/loadtest/requests-ml-100k.json RANKERS=popular,reasoning \\
    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8000 -u 10 -r 10 -t 30s

Environment: REQUESTS (required), RANKERS (popular), OFFSET (0), POOL (0: every request new), REASONING_TOKENS,
RATE_PER_USER (requests/s per user, 1).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, constant_throughput, task

REQUESTS: list[dict[str, Any]] = json.loads(open(os.environ["REQUESTS"]).read())
RANKERS = [r.strip() for r in os.environ.get("RANKERS", "popular").split(",") if r.strip()]
OFFSET = int(os.environ.get("OFFSET", "0"))
POOL = int(os.environ.get("POOL", "0"))
TOKENS = int(os.environ["REASONING_TOKENS"]) if os.environ.get("REASONING_TOKENS") else None
ITERATIONS = itertools.count()  # shared by all users of this process, like k6's iterationInTest


def next_body() -> tuple[str, dict[str, Any]]:
    i = next(ITERATIONS)
    ranker = RANKERS[i % len(RANKERS)]
    index = OFFSET + (i % POOL if POOL > 0 else i)
    body = {**REQUESTS[index % len(REQUESTS)], "ranker": ranker}
    if TOKENS is not None and ranker == "reasoning":
        body["max_reasoning_tokens"] = TOKENS
    return ranker, body


class RecommendUser(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("RATE_PER_USER", "1")))
    network_timeout = 120.0
    connection_timeout = 10.0

    @task
    def recommend(self) -> None:
        ranker, body = next_body()
        with self.client.post(
            "/recommend", json=body, name=f"/recommend [{ranker}]", catch_response=True
        ) as response:
            if response.status_code == 429:
                response.success()  # backpressure by design; counted by the server's reasonrec_rejected_total
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            total_ms = float(response.headers.get("x-total-time", "nan"))
            fallback = response.json().get("fallback")
        self.environment.events.request.fire(
            request_type="SERVER", name=f"x-total-time [{ranker}]" + (" fallback" if fallback else ""),
            response_time=total_ms, response_length=0, exception=None, context={},
        )
