"""The simulated-user job on a real gateway: how long the judge (SmolLM2 taught as the user, `REASONREC_JUDGE`)
takes to refine a batch of hot-added items, and what it costs the requests served meanwhile.

A gateway (`reasonrec serve`: SmolLM2, the dataset's table, a private copy of its index) with the judge first
answers `rounds` uncached `reasoning` requests (real ML-100k histories, one client, closed loop): the idle latency.
Then `items` new items arrive in one `/admin/items` call (twins of seeded catalog items: their titles, genres and
years under new ids), and the same client keeps sending requests until every new item's `placement` says it was
refined: the time the job took and the latency while it ran, as a ratio to the idle one measured in the same run.

    python -m benchmarks.simulated_user_job --judge artifacts/adapters/ml-100k-cold-items-judge-seed0
    # -> docs/results/bench_simulated_user_job.{md,json}
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import Report, percentile, request_bodies
from indexer.core.paths import artifacts_dir
from loadtests.gateway import Gateway
from trainer.data import load_dataset
from trainer.machine import shown_path

ADMIN_TOKEN = "bench"


def twins(dataset: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` seeded catalog items as new items: the same text under the id `twin-<id>`."""
    catalog = load_dataset(dataset).catalog
    return [{"item_id": f"twin-{item.item_id}", "title": item.title, "genres": list(item.genres), "year": item.year}
            for item in random.Random(seed).sample(list(catalog), n)]


def timed(http: httpx.Client, body: dict[str, Any]) -> float:
    sent = time.perf_counter()
    response = http.post("/recommend", json=body)
    response.raise_for_status()
    return (time.perf_counter() - sent) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, required=True, help="judge folder (`reasonrec train-judge`)")
    parser.add_argument("--index", type=Path, required=True,
                        help="the index folder to copy (the one `reasonrec serve --build-only` filled)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--items", type=int, default=10, help="new items added in one call")
    parser.add_argument("--users-per-item", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="idle requests before the items arrive")
    parser.add_argument("--tokens", type=int, default=32, help="max_reasoning_tokens of each request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args(argv)
    index = artifacts_dir() / "bench" / "simulated-user-job-index"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(args.index, index)
    settings = {"model": "smollm2", "dataset": args.dataset, "index_dir": shown_path(index), "judge": str(args.judge),
                "judge_users_per_item": str(args.users_per_item), "admin_token": ADMIN_TOKEN,
                "request_timeout_s": "1200"}
    bodies = iter({**b, "ranker": "reasoning", "max_reasoning_tokens": args.tokens}
                  for b in request_bodies(args.dataset)[2500:])
    new = twins(args.dataset, args.items, args.seed)
    with Gateway(settings, artifacts_dir() / "bench" / "simulated-user-job.log") as gateway, \
            httpx.Client(base_url=gateway.url, timeout=1200) as http:
        timed(http, next(bodies))  # warm-up
        idle = [timed(http, next(bodies)) for _ in range(args.rounds)]
        added = time.perf_counter()
        response = http.post("/admin/items", json={"items": new},
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        response.raise_for_status()
        during: list[float] = []
        placements: list[str | None] = []
        while time.perf_counter() - added < args.timeout_s:
            placements = [http.get(f"/items/{item['item_id']}").json()["placement"] for item in new]
            if all(p and p != "text" for p in placements):
                break
            during.append(timed(http, next(bodies)))
        refined_s = time.perf_counter() - added
    if not all(p and p != "text" for p in placements):
        raise SystemExit(f"the job did not refine every item within {args.timeout_s:.0f} s: {placements}")
    answers = sum(int(p.split("+ ")[1].split()[0]) for p in placements if p) // 2
    row = {"items": args.items, "users_per_item": args.users_per_item, "answers": answers, "refined_s": refined_s,
           "idle_ms_p50": percentile(idle, 50), "idle_ms_p95": percentile(idle, 95),
           "during_ms_p50": percentile(during, 50), "during_ms_p95": percentile(during, 95),
           "requests_during": len(during)}
    row["slowdown_p50"] = row["during_ms_p50"] / row["idle_ms_p50"]
    print(f"{args.items} items refined in {refined_s:.0f} s ({answers} answers); reasoning p50 "
          f"{row['idle_ms_p50']:.0f} ms idle, {row['during_ms_p50']:.0f} ms during (x{row['slowdown_p50']:.2f})")
    report = Report("simulated_user_job", "The simulated-user job on a real gateway")
    report.data = {"settings": settings, "tokens": args.tokens, "new_items": new, "placements": placements, **row}
    report.lines = [
        "| new items | users per item | answers | refined after s | reasoning p50 / p95 ms, idle | "
        "during the job | requests during | p50 ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.items} | {args.users_per_item} | {answers} | {refined_s:.0f} | {row['idle_ms_p50']:.0f} / "
        f"{row['idle_ms_p95']:.0f} | {row['during_ms_p50']:.0f} / {row['during_ms_p95']:.0f} | {len(during)} | "
        f"**x{row['slowdown_p50']:.2f}** |",
        "",
        f"Setup: `reasonrec serve` with `{settings}` (fast engine, micro-batching on; the judge is a second in-process "
        f"copy of the model with the adapter merged). One client, closed loop, uncached `reasoning` requests with "
        f"max_reasoning_tokens={args.tokens}; the new items are twins of {args.items} seeded catalog items (seed "
        f"{args.seed}) added in one call; 'refined after' runs from that call until every item's `placement` "
        "names its answers (an item's count includes the answers where it was the other item, so the answers "
        "column halves their sum).",
    ]
    for path in report.write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
