"""Timings of the two engines on this machine, and their parity, written to docs/results/vllm.json.

    REASONREC_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python tests/vllm_engine/bench_engines.py  # make bench-vllm

Starts the two vLLM servers one after the other (so each start is timed alone), loads the transformers engine,
then runs the same workloads on both engines with SmolLM2-135M fp32 on MovieLens-100k prompts: reasoning one
request at a time, reasoning for a batch in one call, direct user vectors one at a time, item vectors in one
call. Numbers are wall-clock on whatever else the machine is doing; the report records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from parity import (
    item_texts,
    measure,
    movielens,
    sample_users,
    small_catalog,
    user_texts,
)
from standin import free_port

from model.engines.base import Engine
from model.engines.loading import default_model_dir, load_model, materialize_smollm2
from model.engines.transformers_engine import TransformersEngine
from model.engines.vllm_engine import VllmEngine
from model.engines.vllm_launch import launch, stop, wait_healthy
from trainer.machine import machine_line


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def workloads(engine: Engine, users: list[str], items: list[str], tokens: int) -> dict[str, dict[str, float]]:
    """requests/s (and tokens/s or items/s) of each workload on one engine."""
    results: dict[str, dict[str, float]] = {}
    engine.embed_items(items[:2])  # warm-up
    seconds, outs = timed(lambda: [engine.reason([u], tokens)[0] for u in users])
    generated = sum(o.generated_tokens for o in outs)
    results["reasoning, 1 at a time"] = {"seconds": seconds, "requests_per_s": len(users) / seconds,
                                         "tokens_per_s": generated / seconds}
    seconds, outs = timed(lambda: engine.reason(users, tokens))
    generated = sum(o.generated_tokens for o in outs)
    results[f"reasoning, batch of {len(users)}"] = {"seconds": seconds, "requests_per_s": len(users) / seconds,
                                                    "tokens_per_s": generated / seconds}
    seconds, _ = timed(lambda: [engine.embed_direct([u]) for u in users])
    results["direct user vector, 1 at a time"] = {"seconds": seconds, "requests_per_s": len(users) / seconds}
    seconds, _ = timed(lambda: engine.embed_items(items))
    results[f"item vectors, {len(items)} in one call"] = {"seconds": seconds, "items_per_s": len(items) / seconds}
    return results


def start_vllm(python: str, model_dir: Path, logs: Path) -> tuple[dict[str, Any], dict[str, float]]:
    processes, urls, start_s = {}, {}, {}
    for role in ("generate", "pool"):
        port = free_port()
        urls[role] = f"http://127.0.0.1:{port}"
        processes[role] = launch(python, role, model_dir, port, (logs / f"{role}.log").open("wb"))
        start_s[role] = wait_healthy(urls[role], processes[role])
    return {"processes": processes, "urls": urls}, start_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the transformers engine")
    parser.add_argument("--out", type=Path, default=Path("docs/results/vllm"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    python = os.environ["REASONREC_VLLM_PYTHON"]
    data = movielens()
    users = user_texts(data, sample_users(data, args.users, seed=2))
    items = item_texts(small_catalog(data, args.items))
    model_dir = materialize_smollm2(default_model_dir())
    load_before = os.getloadavg()
    servers, start_s = start_vllm(python, model_dir, Path(tempfile.mkdtemp(prefix="vllm-bench-")))
    try:
        vllm = VllmEngine.for_model_folder(model_dir, [servers["urls"]["generate"]], [servers["urls"]["pool"]])
        tf_start, reference = timed(lambda: TransformersEngine(load_model("smollm2"), batch_size=8))
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "make bench-vllm (" + " ".join(sys.argv) + ")",
            "machine": f"{machine_line()}; {platform.platform()}",
            "load_average_before": load_before,
            "model": "SmolLM2-135M-Instruct fp32", "transformers_torch_threads": torch.get_num_threads(),
            "users": args.users, "reasoning_tokens": args.tokens,
            "engine_start_s": {"transformers (load + convert cached)": tf_start,
                               "vllm generation server": start_s["generate"], "vllm pooling server": start_s["pool"]},
            "transformers": workloads(reference, users, items, args.tokens),
            "vllm": workloads(vllm, users, items, args.tokens),
            "parity": measure(vllm, reference, users, items, args.tokens).to_json(),
            "load_average_after": os.getloadavg(),
        }
    finally:
        for process in servers["processes"].values():
            stop(process)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
