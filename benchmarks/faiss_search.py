"""FAISS at catalog scale: Flat (exact) vs IVF vs HNSW over random 576-d items (SmolLM2's hidden size), through
the service's own `indexer.index.ItemIndex` (normalization, string ids, locks included).

For each size (default 10k, 100k, 1M) and kind, with the index's default options:
- build time (normalize, train IVF, add; in chunks of 50k, see `build`);
- single-query search latency p50/p99, k=10, FAISS on one OpenMP thread (as the gateway's `search_threads`);
- recall@10 against exact search on the same queries, also at larger nprobe (IVF) / efSearch (HNSW);
- hot-add of one item: encoding its item prompt with SmolLM2 (independent of the index, measured once) plus
  `ItemIndex.add` of its vector (median of 5 adds).
Random Gaussian vectors have no cluster structure, the hardest case for IVF and HNSW recall. Builds are
estimated from the previous size (IVF ~ n x nlist, HNSW ~ n log n) and skipped, with the estimate reported,
when over `--max-build-s`.

    python -m benchmarks.faiss_search          # -> docs/results/bench_faiss_search.{md,json}
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from dataclasses import asdict
from typing import Any

import faiss
import numpy as np

from benchmarks.common import Report, percentile
from indexer.index import IndexOptions, ItemIndex, default_nlist
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import item_prompt
from trainer.data import load_dataset

DIM = 576
K = 10
SWEEP: dict[str, list[IndexOptions]] = {
    "flat": [IndexOptions()],
    "ivf": [IndexOptions(), IndexOptions(nprobe=64), IndexOptions(nprobe=256)],
    "hnsw": [IndexOptions(), IndexOptions(ef_search=512)],
}


def random_vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)


def build_cost(kind: str, n: int) -> float:
    """Relative build cost, to scale a measured build time to another size."""
    if kind == "ivf":
        return n * default_nlist(n)
    if kind == "hnsw":
        return n * math.log(n)
    return n


def build(kind: str, ids: list[str], data: np.ndarray, chunk: int = 50_000) -> ItemIndex:
    """The index with default options, added in chunks (peak memory ~ the data once more, not three times);
    IVF keeps its default nlist for `n` items but trains on the first 40 x nlist vectors (FAISS asks for 39-256
    per list)."""
    if kind == "ivf":
        nlist = default_nlist(len(ids))
        first = min(len(ids), 40 * nlist)
        index = ItemIndex.build(ids[:first], data[:first], kind="ivf", options=IndexOptions(nlist=nlist))
    else:
        first, index = 0, ItemIndex(DIM, kind=kind)
    for start in range(first, len(ids), chunk):
        index.add(ids[start : start + chunk], data[start : start + chunk])
    return index


def timed_searches(index: ItemIndex, queries: np.ndarray) -> tuple[list[float], list[list[str]]]:
    times, found = [], []
    for row in queries:
        start = time.perf_counter()
        result = index.search(row[None, :], K)[0]
        times.append(time.perf_counter() - start)
        found.append([item_id for item_id, _ in result])
    return times, found


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return statistics.fmean(len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True))


def hot_add_seconds(index: ItemIndex, vector: np.ndarray, repeats: int = 5) -> float:
    times = []
    for j in range(repeats):
        start = time.perf_counter()
        index.add([f"hot-{j}"], vector[None, :])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, ids: list[str], data: np.ndarray, queries: np.ndarray, exact: list[list[str]] | None,
            item_vector: np.ndarray) -> tuple[dict[str, Any], list[list[str]]]:
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds on every core
    start = time.perf_counter()
    index = build(kind, ids, data)
    out: dict[str, Any] = {"build_s": time.perf_counter() - start, "searches": []}
    faiss.omp_set_num_threads(1)  # searches as in the gateway
    found_default: list[list[str]] = []
    for options in SWEEP[kind]:
        index.options = options
        times, found = timed_searches(index, queries)
        found_default = found_default or found
        out["searches"].append({
            "options": asdict(options), "p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99),
            "recall_at_10": recall(found, exact) if exact is not None else 1.0,
        })
    index.options = IndexOptions()
    out["add_one_s"] = hot_add_seconds(index, item_vector)
    if kind == "ivf":
        out["nlist"] = int(index._faiss.nlist)
    return out, found_default


def encode_one_item_s(repeats: int = 5) -> tuple[float, np.ndarray]:
    """Median seconds to encode one real item prompt with SmolLM2, and its vector."""
    engine = TransformersEngine(load_model("smollm2"), batch_size=1)
    item = next(iter(load_dataset("ml-100k").catalog))
    text = item_prompt(item)
    engine.embed_items([text])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        vector = engine.embed_items([text])[0]
        times.append(time.perf_counter() - start)
    return statistics.median(times), vector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="flat,ivf,hnsw", help="flat first: it is the recall reference")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--max-build-s", type=float, default=1200.0, help="skip builds estimated to take longer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = Report("faiss_search", "FAISS search at catalog scale: Flat vs IVF vs HNSW")
    encode_s, item_vector = encode_one_item_s()
    queries = random_vectors(args.queries, args.seed + 1)
    rows, skipped, last_build = [], [], {}
    for n in (int(x) for x in args.sizes.split(",")):
        data, ids = random_vectors(n, args.seed), [f"i{j}" for j in range(n)]
        exact: list[list[str]] | None = None
        for kind in args.kinds.split(","):
            if kind in last_build:
                previous_n, seconds = last_build[kind]
                estimate = seconds * build_cost(kind, n) / build_cost(kind, previous_n)
                if estimate > args.max_build_s:
                    skipped.append({"kind": kind, "n": n, "estimated_build_s": estimate})
                    print(f"skip {kind} at n={n}: build estimated at {estimate:.0f} s", flush=True)
                    continue
            result, found = measure(kind, ids, data, queries, exact, item_vector)
            exact = exact if kind != "flat" else found
            last_build[kind] = (n, result["build_s"])
            rows.append({"n": n, "kind": kind, **result})
            print(f"n={n} {kind}: build {result['build_s']:.1f} s, {result['searches'][0]}", flush=True)
            gc.collect()
        del data, ids
        gc.collect()
    report.data = {"dim": DIM, "k": K, "queries": args.queries, "encode_one_item_s": encode_s, "rows": rows,
                   "skipped": skipped}
    report.lines = lines(rows, skipped, encode_s, args)
    for path in report.write():
        print(f"wrote {path}")
    return 0


def lines(rows: list[dict[str, Any]], skipped: list[dict[str, Any]], encode_s: float,
          args: argparse.Namespace) -> list[str]:
    out = ["| items | kind | build s | search options | p50 ms | p99 ms | recall@10 | hot-add: encode + add ms |",
           "|---:|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        for j, s in enumerate(row["searches"]):
            opts = {"flat": "exact", "ivf": f"nlist {row.get('nlist')}, nprobe {s['options']['nprobe']}",
                    "hnsw": f"M {s['options']['hnsw_m']}, efSearch {s['options']['ef_search']}"}[row["kind"]]
            add = f"{1000 * encode_s:.0f} + {1000 * row['add_one_s']:.2f}" if j == 0 else ""
            build = f"{row['build_s']:.1f}" if j == 0 else ""
            out.append(f"| {row['n']:,} | {row['kind']} | {build} | {opts} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                       f"| {s['recall_at_10']:.3f} | {add} |")
    out += ["", f"Setup: random standard-normal 576-d vectors (seed {args.seed}), {args.queries} random queries, "
            "k = 10, `indexer.index.ItemIndex` with its default options (IVF: nlist ~ 4 sqrt(n), nprobe 16, "
            "trained on the first 40 x nlist vectors; HNSW: M 32, efConstruction 200, efSearch 128) plus the wider "
            "searches listed; one query at a time on one FAISS thread; builds on every core, adding 50k vectors at "
            "a time. Recall is against the exact (flat) results. Hot-add = encoding "
            f"one ML-100k item prompt with SmolLM2 ({1000 * encode_s:.0f} ms, the same at every size) + adding its "
            "vector to the index (median of 5)."]
    if skipped:
        out += ["", "Skipped (build estimated from the previous size over `--max-build-s` "
                f"{args.max_build_s:.0f} s): " + "; ".join(
                    f"{s['kind']} at {s['n']:,} items (~{s['estimated_build_s'] / 60:.0f} min)" for s in skipped)]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
