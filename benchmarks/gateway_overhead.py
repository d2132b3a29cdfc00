"""Gateway overhead on the reasoning path: request time minus engine time, as a share of request time, at several
concurrencies.

A real gateway (`reasonrec serve`, SmolLM2, micro-batching on, in-process cache) gets N closed-loop clients, each
sending `rounds` uncached /recommend requests (real ML-100k histories, never repeated) one after the other.
Per request: engine time = `timings_ms.reasoning` (the wait for the engine, batcher queue included), server time
= the `x-total-time` header, client time = what the client measured. Overhead = server (or client) time minus
engine time: HTTP, validation, prompt, cache, search, serialization. The share is the sum of overheads over the
sum of request times (and the median of per-request shares).

    python -m benchmarks.gateway_overhead      # -> docs/results/bench_gateway_overhead.{md,json}
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import httpx

from benchmarks.common import Report, percentile, request_bodies
from indexer.core.paths import artifacts_dir
from loadtests.gateway import Gateway


def run_level(url: str, bodies: list[dict[str, Any]], n: int) -> list[dict[str, float]]:
    """N clients, each posting its share of `bodies` in turn; one record per request."""
    records: list[dict[str, float]] = []
    ready = threading.Barrier(n)

    def client(mine: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=url, timeout=1200) as http:
            ready.wait()
            for body in mine:
                sent = time.perf_counter()
                response = http.post("/recommend", json=body)
                client_ms = (time.perf_counter() - sent) * 1000
                answer = response.json()
                records.append({
                    "status": response.status_code, "client_ms": client_ms,
                    "server_ms": float(response.headers["x-total-time"]),
                    "engine_ms": answer["timings_ms"].get("reasoning") or answer["timings_ms"].get("embed") or 0.0,
                    "fallback": answer.get("fallback") is not None, "cached": answer.get("cached", False),
                })

    threads = [threading.Thread(target=client, args=(bodies[i::n],)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def summarize(records: list[dict[str, float]]) -> dict[str, float]:
    ok = [r for r in records if r["status"] == 200 and not r["fallback"] and not r["cached"]]
    server = sum(r["server_ms"] for r in ok)
    client = sum(r["client_ms"] for r in ok)
    engine = sum(r["engine_ms"] for r in ok)
    return {
        "requests": len(records), "engine_answers": len(ok),
        "server_ms_p50": percentile([r["server_ms"] for r in ok], 50),
        "engine_ms_p50": percentile([r["engine_ms"] for r in ok], 50),
        "server_overhead_ms_p50": percentile([r["server_ms"] - r["engine_ms"] for r in ok], 50),
        "server_overhead_ms_max": max((r["server_ms"] - r["engine_ms"] for r in ok), default=float("nan")),
        "client_overhead_ms_p50": percentile([r["client_ms"] - r["engine_ms"] for r in ok], 50),
        "server_share": (server - engine) / server if server else float("nan"),
        "client_share": (client - engine) / client if client else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--tokens", type=int, default=32, help="max_reasoning_tokens of each request")
    parser.add_argument("--ranker", default="reasoning", help="reasoning or direct")
    parser.add_argument("--offset", type=int, default=2000, help="first request used (away from the load test's)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    settings = {"model": "smollm2", "max_inflight": str(2 * max(levels)), "engine_batch_size": str(max(levels)),
                "request_timeout_s": "1200"}
    bodies = [{**b, "ranker": args.ranker, "max_reasoning_tokens": args.tokens} for b in request_bodies()[args.offset:]]
    report = Report("gateway_overhead", f"Gateway overhead on the {args.ranker} path")
    rows = []
    with Gateway(settings, artifacts_dir() / "bench" / "gateway.log") as gateway:
        run_level(gateway.url, bodies[:2], 2)  # warm-up (first-call allocations); these requests are not reused
        used = 2
        for n in levels:
            level = bodies[used : used + n * args.rounds]
            used += len(level)
            row = {"concurrency": n, **summarize(run_level(gateway.url, level, n))}
            rows.append(row)
            print(f"N={n}: server overhead {100 * row['server_share']:.3f}% "
                  f"(p50 {row['server_overhead_ms_p50']:.1f} ms of {row['server_ms_p50']:.0f} ms)", flush=True)
    report.data = {"settings": settings, "ranker": args.ranker, "tokens": args.tokens, "rounds": args.rounds,
                   "rows": rows}
    report.lines = [
        "| N | engine answers | p50 server ms | p50 engine ms | p50 overhead ms (server / client) "
        "| max server overhead ms | overhead share, server | overhead share, client |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['concurrency']} | {r['engine_answers']} | {r['server_ms_p50']:.0f} | {r['engine_ms_p50']:.0f} | "
          f"{r['server_overhead_ms_p50']:.1f} / {r['client_overhead_ms_p50']:.1f} "
          f"| {r['server_overhead_ms_max']:.1f} | "
          f"**{100 * r['server_share']:.3f}%** | {100 * r['client_share']:.3f}% |" for r in rows),
        "",
        f"Setup: `reasonrec serve` with `{settings}` (micro-batching on, window 5 ms; in-process cache), "
        f"{args.ranker} ranker, max_reasoning_tokens={args.tokens}, {args.rounds} uncached requests per client in a "
        "closed loop. Engine time is `timings_ms.reasoning` (or `embed`): the wait for the engine, batcher queue "
        "included. Only answers the engine gave count (no fallback, not cached). Target: server share < 5%.",
    ]
    for path in report.write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
