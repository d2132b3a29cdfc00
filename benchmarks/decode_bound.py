"""Single-stream decode speed against the memory-bandwidth bound of the machine.

At batch 1 each decode step reads every weight once (and the KV cache of the context) for ~2 FLOPs per weight,
so on a CPU it is bound by memory bandwidth: bound = read bandwidth / bytes read per token.
- Bytes per token: every parameter once (fp32; tied input/output embeddings count once: the output layer reads
  the matrix, the input lookup a single row) + the KV cache at the prompt's length (2 x layers x kv heads x
  head dim x tokens x 4 bytes).
- Read bandwidth: `torch.sum` over a 1 GiB float32 tensor with torch's threads (what the model uses), median of
  5; single-thread numpy for reference.
- Decode: (time of `reason` with 1 + T tokens - time with 1 token) / T on the same real prompt, median of 3, so
  prefill and the user-vector pass cancel out; what remains is the engine's real per-token loop.

    python -m benchmarks.decode_bound          # -> docs/results/bench_decode_bound.{md,json}
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks.common import Report, user_prompts
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine

GIB = 2**30


def read_bandwidth(repeats: int = 5) -> dict[str, float]:
    """GB/s reading a 1 GiB float32 buffer: torch (its thread pool) and numpy (one thread)."""
    tensor = torch.ones(GIB // 4, dtype=torch.float32)
    array = tensor.numpy()

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return GIB / statistics.median(times) / 1e9

    return {"torch_gb_s": timed(lambda: tensor.sum()), "numpy_1thread_gb_s": timed(lambda: np.add.reduce(array)),
            "torch_threads": torch.get_num_threads()}


def bytes_per_token(engine: TransformersEngine, context_tokens: int) -> dict[str, float]:
    model = engine.model
    unique = {id(p): p for p in model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() for p in unique)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * context_tokens * 4
    return {"weight_bytes": weights, "kv_bytes": kv, "total_bytes": weights + kv, "context_tokens": context_tokens}


def decode_seconds_per_token(engine: TransformersEngine, prompt: str, tokens: int, repeats: int) -> list[float]:
    def timed(n: int) -> float:
        start = time.perf_counter()
        engine.reason([prompt], n)
        return time.perf_counter() - start

    timed(tokens + 1)  # warm-up
    return [(timed(tokens + 1) - timed(1)) / tokens for _ in range(repeats)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)
    engine = TransformersEngine(load_model(args.model), batch_size=1)
    report = Report("decode_bound", "Single-stream decode against the memory-bandwidth bound")
    prompt = user_prompts(1)[0]
    context = len(engine._ids(engine.render(prompt))) + args.tokens // 2  # mean context over the decode
    bandwidth = read_bandwidth()
    per_token = decode_seconds_per_token(engine, prompt, args.tokens, args.repeats)
    moved = bytes_per_token(engine, context)
    measured = 1.0 / statistics.median(per_token)
    bound = bandwidth["torch_gb_s"] * 1e9 / moved["total_bytes"]
    report.data = {"model": engine.fingerprint.to_json(), "dtype": "float32", "bandwidth": bandwidth,
                   "bytes_per_token": moved, "seconds_per_token": per_token, "decode_tokens_per_s": measured,
                   "bound_tokens_per_s": bound, "ratio": measured / bound}
    report.lines = [
        "| quantity | value |", "|---|---:|",
        f"| weights read per token (fp32, tied embeddings once) | {moved['weight_bytes'] / 1e6:.1f} MB |",
        f"| KV cache read per token at {context} tokens of context | {moved['kv_bytes'] / 1e6:.1f} MB |",
        f"| read bandwidth, torch.sum on {bandwidth['torch_threads']} threads (numpy, 1 thread) "
        f"| {bandwidth['torch_gb_s']:.1f} GB/s ({bandwidth['numpy_1thread_gb_s']:.1f}) |",
        f"| bandwidth bound | {bound:.1f} tokens/s |",
        f"| measured single-stream decode (median of {args.repeats}; runs: "
        f"{', '.join(f'{1 / s:.1f}' for s in per_token)}) | {measured:.1f} tokens/s |",
        f"| **measured / bound** | **{measured / bound:.2f}** |",
        "",
        f"Setup: {engine.fingerprint.model_id} in fp32, greedy, one real ML-100k prompt, {args.tokens} decode tokens "
        "per run; decode time = reason(1 + T tokens) - reason(1 token), divided by T.",
    ]
    print(f"decode {measured:.1f} tok/s, bound {bound:.1f} tok/s, ratio {measured / bound:.2f}")
    for path in report.write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
