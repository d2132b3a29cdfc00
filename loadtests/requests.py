"""The request file every load test reads: /recommend bodies built from real user histories of a dataset.

Each request is a window of `history` consecutive interactions (catalog item id, rating, timestamp; oldest
first) from one user, ending at a seeded random position of that user's timeline, so the file holds many
distinct prompts (an uncached load test must never repeat one). Users are drawn round-robin in a seeded order.
The file is written under `artifacts/` (gitignored): it is derived from MovieLens, which must not be committed.

    python -m loadtests.requests --dataset ml-100k --count 3000
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from indexer.core.paths import artifacts_dir
from trainer.data import load_dataset
from trainer.data.datasets import Dataset, Interaction


def default_path(dataset: str) -> Path:
    return artifacts_dir() / "loadtest" / f"requests-{dataset}.json"


def request_body(window: list[Interaction], k: int) -> dict[str, Any]:
    entries = []
    for x in window:
        entry: dict[str, Any] = {"item_id": x.item_id}
        if x.rating is not None:
            entry["rating"] = x.rating
        if x.timestamp is not None:
            entry["timestamp"] = x.timestamp
        entries.append(entry)
    return {"history": entries, "k": k}


def build_requests(ds: Dataset, count: int, history: int, k: int, seed: int) -> list[dict[str, Any]]:
    """`count` distinct requests (fewer if the dataset has fewer distinct windows)."""
    rng = random.Random(seed)
    users = sorted(u for u, h in ds.histories.items() if len(h) >= history)
    rng.shuffle(users)
    ends = {u: list(range(history, len(ds.histories[u]) + 1)) for u in users}
    for positions in ends.values():
        rng.shuffle(positions)
    requests: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(requests) < count and any(ends.values()):
        for user in users:
            if len(requests) == count or not ends[user]:
                continue
            end = ends[user].pop()
            body = request_body(ds.histories[user][end - history : end], k)
            key = json.dumps(body["history"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                requests.append(body)
    return requests


def write_requests(dataset: str, out: Path, count: int, history: int = 20, k: int = 10, seed: int = 0) -> Path:
    requests = build_requests(load_dataset(dataset), count, history, k, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(requests))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", help="the dataset the served index was built from")
    parser.add_argument("--count", type=int, default=3000, help="distinct requests to write")
    parser.add_argument("--history", type=int, default=20, help="interactions per request (the prompt shows 20)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/loadtest/requests-<dataset>.json")
    args = parser.parse_args(argv)
    out = args.out or default_path(args.dataset)
    write_requests(args.dataset, out, args.count, args.history, args.k, args.seed)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
