"""Engine throughput under concurrency: the micro-batching engine fed by N concurrent callers against an offline
batched `reason` of the same batch size, in generated tokens per second, as a ratio.

For each N (default 1, 4, 8, 16) the same `rounds x N` real prompts (ML-100k histories rendered as the gateway's
user prompt, ~550 tokens) are reasoned about with a budget of `--tokens` (default 64, the service default):
- offline: `TransformersEngine.reason` on consecutive batches of N prompts (what a batch job does);
- online: N threads, each sending its `rounds` prompts one after the other (a closed loop) through
  `MicroBatchingEngine` (continuous batching, 5 ms window, max batch N), as the gateway's requests would.
Throughput = generated tokens / wall time (prefill included in both). Each N is measured `--repeats` times as
an (offline, online) pair, the order alternating, and the median of the per-pair ratios is reported: on a busy
machine the drift then hits both alike. The untrained model never writes `<answer>`: every row runs the full
budget.

    python -m benchmarks.engine_throughput                  # -> docs/results/bench_engine_throughput.{md,json}
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import asdict, dataclass

from benchmarks.common import Report, percentile, user_prompts
from model.engines.batching import MicroBatchingEngine
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine


@dataclass
class Measured:
    wall_s: float
    tokens: int
    requests: int
    latency_p50_s: float | None = None
    mean_rows_per_step: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def offline(engine: TransformersEngine, prompts: list[str], n: int, tokens: int) -> Measured:
    start = time.perf_counter()
    generated = 0
    for first in range(0, len(prompts), n):
        generated += sum(r.generated_tokens for r in engine.reason(prompts[first : first + n], tokens))
    return Measured(time.perf_counter() - start, generated, len(prompts))


def online(engine: TransformersEngine, prompts: list[str], n: int, tokens: int, window_s: float,
           continuous: bool) -> Measured:
    batcher = MicroBatchingEngine(engine, window_s=window_s, max_batch=n, continuous=continuous)
    latencies: list[float] = []
    generated: list[int] = []
    ready = threading.Barrier(n + 1)

    def client(mine: list[str]) -> None:
        ready.wait()
        for prompt in mine:
            sent = time.perf_counter()
            generated.append(batcher.reason([prompt], tokens)[0].generated_tokens)
            latencies.append(time.perf_counter() - sent)

    threads = [threading.Thread(target=client, args=(prompts[i::n],)) for i in range(n)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    batcher.close()
    stats = batcher.stats
    return Measured(wall, sum(generated), len(prompts), percentile(latencies, 50), stats.rows / max(1, stats.batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma list of N")
    parser.add_argument("--tokens", type=int, default=32, help="reasoning token budget")
    parser.add_argument("--repeats", type=int, default=3, help="(offline, online) pairs per N, order alternating")
    parser.add_argument("--rounds", type=int, default=2, help="prompts per caller (online) / batches (offline)")
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--per-batch", action="store_true", help="also measure the per-batch (not continuous) mode")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    engine = TransformersEngine(load_model(args.model), batch_size=max(levels))
    report = Report("engine_throughput", "Engine throughput under concurrency: micro-batched vs offline batch")
    prompts_all = user_prompts(args.rounds * max(levels))
    # warm-up of both paths at the largest batch: the first calls pay for allocations and page faults (~30 s)
    offline(engine, prompts_all[: max(levels)], max(levels), 2)
    online(engine, prompts_all[: max(levels)], max(levels), 2, args.window_ms / 1000, continuous=True)
    rows = [measure_level(engine, prompts_all[: args.rounds * n], n, args) for n in levels]
    report.data = {"model": engine.fingerprint.to_json(), "tokens": args.tokens, "rounds": args.rounds,
                   "repeats": args.repeats,
                   "window_ms": args.window_ms, "prompt_tokens_mean": mean_prompt_tokens(engine, prompts_all),
                   "rows": rows}
    report.lines = table(rows, args) + notes(args, report.data["prompt_tokens_mean"])
    for path in report.write():
        print(f"wrote {path}")
    return 0


def measure_level(engine: TransformersEngine, prompts: list[str], n: int, args: argparse.Namespace) -> dict:
    """`repeats` alternating (offline, online) pairs at concurrency n; medians and every pair's ratio."""
    modes = {"continuous": True, "per_batch": False} if args.per_batch else {"continuous": True}
    runs: dict[str, list[Measured]] = {"offline": [], **{mode: [] for mode in modes}}
    for repeat in range(args.repeats):
        order = ["offline", *modes] if repeat % 2 == 0 else [*modes, "offline"]
        for mode in order:
            runs[mode].append(offline(engine, prompts, n, args.tokens) if mode == "offline" else
                              online(engine, prompts, n, args.tokens, args.window_ms / 1000, modes[mode]))
    row: dict = {"concurrency": n}
    for mode, measured in runs.items():
        rates = [m.tokens_per_s for m in measured]
        row[mode] = {"tokens_per_s": statistics.median(rates), "runs": [{**asdict(m), "tokens_per_s": m.tokens_per_s}
                                                                          for m in measured]}
    for mode in modes:
        ratios = [on.tokens_per_s / off.tokens_per_s for on, off in zip(runs[mode], runs["offline"], strict=True)]
        row[f"ratio_{mode}"], row[f"ratios_{mode}"] = statistics.median(ratios), ratios
    last = runs["continuous"][-1]
    row["continuous"].update(latency_p50_s=last.latency_p50_s, mean_rows_per_step=last.mean_rows_per_step)
    print(f"N={n}: offline {row['offline']['tokens_per_s']:.2f} tok/s, micro-batched "
          f"{row['continuous']['tokens_per_s']:.2f} tok/s, ratio {row['ratio_continuous']:.3f} "
          f"(pairs {', '.join(f'{r:.3f}' for r in row['ratios_continuous'])})", flush=True)
    return row


def mean_prompt_tokens(engine: TransformersEngine, prompts: list[str]) -> float:
    return sum(len(engine._ids(engine.render(p))) for p in prompts) / len(prompts)


def table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    extra = " | per-batch tok/s | per-batch ratio" if args.per_batch else ""
    lines = [
        f"| N | offline tok/s | micro-batched tok/s | ratio (median) | ratio of each pair | mean rows per decode step "
        f"| p50 latency s{extra} |",
        "|---:|---:|---:|---:|---|---:|---:|" + ("---:|---:|" if args.per_batch else ""),
    ]
    for row in rows:
        on, off = row["continuous"], row["offline"]
        pairs = ", ".join(f"{r:.2f}" for r in row["ratios_continuous"])
        tail = (f" | {row['per_batch']['tokens_per_s']:.2f} | {row['ratio_per_batch']:.3f}" if args.per_batch else "")
        lines.append(f"| {row['concurrency']} | {off['tokens_per_s']:.2f} | {on['tokens_per_s']:.2f} | "
                     f"**{row['ratio_continuous']:.3f}** | {pairs} | {on['mean_rows_per_step']:.2f} "
                     f"| {on['latency_p50_s']:.1f}{tail} |")
    return lines


def notes(args: argparse.Namespace, prompt_tokens: float) -> list[str]:
    return [
        "",
        f"Setup: SmolLM2-135M-Instruct fp32 on CPU, greedy, {args.tokens} reasoning tokens per request (the model "
        f"never writes `<answer>`, so every row runs the full budget), prompts of {prompt_tokens:.0f} tokens on "
        f"average (real ML-100k histories, 20 lines), {args.rounds} prompts per caller, {args.repeats} alternating "
        "(offline, micro-batched) pairs per N; tokens/s columns are medians over the pairs. Offline: "
        "`TransformersEngine.reason` on batches of N. Micro-batched: N threads calling `MicroBatchingEngine.reason` "
        f"one prompt at a time (continuous batching, window {args.window_ms:g} ms, max batch N). Throughput counts "
        "generated tokens over wall time, prefill included. Target: ratio >= 0.9 at N = 8.",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
