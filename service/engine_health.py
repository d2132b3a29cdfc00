"""What /readyz says about the engine: in process, or each vLLM server's `GET /health`, probed with a short timeout.

A vLLM server that does not answer is reported but does not make the gateway unready: the other replicas, or the
fallback ranker, answer meanwhile (`fallback: "engine_error"`), and taking every gateway replica out of rotation
because a shared engine is down would turn a degraded service into an outage (the same reasoning as for Redis in
`service.routes.health`). `reasonrec_fallback_total{reason}` is what to alert on (deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import asyncio

import httpx

from model.engines.replicas import HEALTH_PATH
from service.settings import Settings

PROBE_TIMEOUT_S = 2.0


async def engine_state(settings: Settings) -> str:
    """One line: the in-process engine ("transformers (in process)"), or every vLLM server by role with "ok" or
    "down (why)"."""
    if settings.engine != "vllm":
        return f"{settings.engine} (in process)"
    roles = [("generate", url) for url in settings.vllm_generate_urls] + [
        ("pool", url) for url in settings.vllm_pool_urls]
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
        states = await asyncio.gather(*(_probe(client, url) for _, url in roles))
    return "vllm: " + ", ".join(f"{role} {url} {state}" for (role, url), state in zip(roles, states, strict=True))


async def _probe(client: httpx.AsyncClient, url: str) -> str:
    try:
        response = await client.get(url.rstrip("/") + HEALTH_PATH)
    except httpx.HTTPError as exc:
        return f"down ({type(exc).__name__})"
    return "ok" if response.status_code == 200 else f"down (HTTP {response.status_code})"
