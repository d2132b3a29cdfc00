"""The fast engine against its reference: parity (greedy texts and states) and speed (paired, interleaved, the
same process), one request at a time, on the reasoning prompts the gateway builds for real ML-100k requests
(~630 tokens: the instruction and 20 history lines), with the served reasoning adapter and budget.

- Parity on `--n` prompts: how many greedy reasonings equal the reference's word for word, and the cosine of the
  state after the reasoning and of the `direct` state to the reference's (the service's exact paths must give the
  same text on at least 48 of 50 and states at cosine >= .999).
- Speed on `--speed-n` prompts, each engine in turn on the same prompt: the whole reasoning (prefill, decode, the
  state pass), and the `direct` state (a prefill); medians and the median of the paired ratios reference / fast.
  Where the reference's time goes: its `direct` time is a prefill; (reasoning - prefill) / generated tokens is
  its time per token.

    python -m benchmarks.fast_engine            # -> docs/results/bench_fast_engine.{md,json}
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Report, user_prompts
from indexer.core.paths import SHIPPED
from model.engines.base import Engine
from model.engines.fast_engine import FastEngine
from model.engines.lean import PRECISIONS
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from trainer.machine import shown_path


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def parity(reference: Engine, engines: dict[str, Engine], prompts: list[str], tokens: int) -> dict[str, Any]:
    theirs = reference.reason(prompts, tokens)
    direct = reference.embed_direct(prompts)
    out = {}
    for name, engine in engines.items():
        ours = engine.reason(prompts, tokens)
        ours_direct = engine.embed_direct(prompts)
        state = [_cos(a.vector, b.vector) for a, b in zip(ours, theirs, strict=True)]
        same = [a.text == b.text for a, b in zip(ours, theirs, strict=True)]
        out[name] = {"prompts": len(prompts), "texts_equal": sum(same),
                     "state_cos_min": min(state), "state_cos_median": statistics.median(state),
                     "state_cos_min_same_text": min((c for c, s in zip(state, same, strict=True) if s), default=None),
                     "direct_cos_min": min(_cos(a, b) for a, b in zip(ours_direct, direct, strict=True))}
        print(name, out[name], flush=True)
    out["reference"] = {"marker_rate": float(np.mean([r.wrote_marker for r in theirs])),
                        "tokens_mean": float(np.mean([r.generated_tokens for r in theirs]))}
    return out


def speed(engines: dict[str, Engine], prompts: list[str], tokens: int) -> dict[str, Any]:
    """Each engine on each prompt in turn (reasoning, then `direct`): seconds per engine and prompt."""
    times: dict[str, dict[str, list[float]]] = {name: {"reasoning": [], "direct": [], "tokens": []} for name in engines}
    for engine in engines.values():  # warm-up: pinned prefixes, allocator, kernels
        engine.reason(prompts[:1], 4)
    for i, prompt in enumerate(prompts):
        for name, engine in engines.items():
            (result,), seconds = _timed(lambda e=engine, p=prompt: e.reason([p], tokens))
            times[name]["reasoning"].append(seconds)
            times[name]["tokens"].append(result.generated_tokens)
            times[name]["direct"].append(_timed(lambda e=engine, p=prompt: e.embed_direct([p]))[1])
        print(f"prompt {i + 1}/{len(prompts)}: " + ", ".join(
            f"{n} {t['reasoning'][-1]:.2f} s" for n, t in times.items()), flush=True)
    return times


def summary(times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    ref = times["reference"]
    out: dict[str, Any] = {}
    for name, t in times.items():
        row = {f"{kind}_p50_s": statistics.median(t[kind]) for kind in ("reasoning", "direct")}
        row["per_token_p50_s"] = statistics.median(
            (r - d) / max(n, 1) for r, d, n in zip(t["reasoning"], t["direct"], t["tokens"], strict=True))
        if name != "reference":
            for kind in ("reasoning", "direct"):
                row[f"{kind}_speedup_paired_median"] = statistics.median(
                    a / b for a, b in zip(ref[kind], t[kind], strict=True))
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="prompts of the parity check (50)")
    parser.add_argument("--speed-n", type=int, default=20, help="prompts timed (20)")
    parser.add_argument("--tokens", type=int, default=48, help="reasoning budget (48, the served default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--adapter", type=Path, default=SHIPPED / "ml-100k" / "reasoning",
                        help="the reasoning adapter (default: the one make serve ships)")
    parser.add_argument("--precisions", default="exact,fast", help="fast-engine precisions to measure (exact,fast)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = args.adapter if (args.adapter / "adapter_config.json").is_file() else None
    adapter_shown = shown_path(adapter) if adapter else None
    report = Report("fast_engine", "The fast engine against the transformers engine: parity and speed")
    reference = TransformersEngine(load_model("smollm2", reasoning_adapter=adapter), batch_size=1)
    engines: dict[str, Engine] = {"reference": reference}
    for name in args.precisions.split(","):
        engines[f"fast-{name}"] = FastEngine(load_model("smollm2", reasoning_adapter=adapter), PRECISIONS[name])
    prompts = user_prompts(max(args.n, args.speed_n))
    found = parity(reference, {k: v for k, v in engines.items() if k != "reference"}, prompts[: args.n],
                   args.tokens)
    times = speed(engines, prompts[: args.speed_n], args.tokens)
    figures = summary(times)
    report.data = {"parity": found, "speed": figures, "times": times, "tokens": args.tokens,
                   "threads": torch.get_num_threads(), "adapter": adapter_shown}
    ref = figures["reference"]
    report.lines = [
        f"Reasoning prompts of {max(args.n, args.speed_n)} real ML-100k requests (`benchmarks.common.user_prompts`; "
        f"the instruction and 20 history lines, ~630 tokens), greedy, budget {args.tokens}, reasoning adapter "
        f"`{adapter_shown}`, one request at a time, {torch.get_num_threads()} torch threads.", "",
        "## Where the reference's time goes", "",
        f"One reasoning {ref['reasoning_p50_s']:.2f} s (p50 of {args.speed_n}); its `direct` state (a prefill of the "
        f"prompt) {ref['direct_p50_s']:.2f} s; per generated token (reasoning - prefill over the tokens, the state "
        f"pass included) {1000 * ref['per_token_p50_s']:.0f} ms; {found['reference']['tokens_mean']:.1f} tokens on "
        f"average, `<answer>` written in {100 * found['reference']['marker_rate']:.0f}%.", "",
        "## Parity with the reference", "",
        "| engine | texts equal | state cosine, min (median) | min where the text is equal | direct cosine, min |",
        "|---|---|---|---|---|",
    ]
    for name, p in found.items():
        if name == "reference":
            continue
        same = "-" if p["state_cos_min_same_text"] is None else f"{p['state_cos_min_same_text']:.6f}"
        report.lines.append(f"| {name} | {p['texts_equal']}/{p['prompts']} | {p['state_cos_min']:.6f} "
                            f"({p['state_cos_median']:.6f}) | {same} | {p['direct_cos_min']:.6f} |")
    report.lines += ["", "## Speed (paired, interleaved)", "",
                     "| engine | reasoning p50 s | x reference | direct p50 s | x reference | per token p50 ms |",
                     "|---|---|---|---|---|---|"]
    for name, s in figures.items():
        ratios = ["1" if name == "reference" else f"{s[f'{kind}_speedup_paired_median']:.2f}"
                  for kind in ("reasoning", "direct")]
        report.lines.append(f"| {name} | {s['reasoning_p50_s']:.2f} | {ratios[0]} | {s['direct_p50_s']:.2f} "
                            f"| {ratios[1]} | {1000 * s['per_token_p50_s']:.0f} |")
    for path in report.write():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
