"""The latency report of `loadtests.run`: docs/results/latency.md (tables and the targets), latency.json (every
figure, the setup and the machine) and latency.png (server p50/p99 and fallback/429 rates against arrival rate).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TARGET_CACHED_P99_RATIO = 2.0
TARGET_OVERHEAD_SHARE = 0.05


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def load(r: dict[str, Any]) -> str:
    """A run's load: its arrival rate (open model), or its concurrent users (closed model)."""
    return f"{r['users']} user{'s' * (r['users'] > 1)}" if r.get("users") else f"{r['rate']:g}/s"


def results_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| scenario | ranker | load | requests | OK/s | p50 ms | p95 ms | p99 ms | max ms | client p99 ms | errors "
        "| 429 | fallback | cached | dropped | thresholds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        k = r["k6"]
        rows.append(
            f"| {r['scenario']} | {r['ranker']} | {load(r)} | {k['requests']:.0f} "
            f"| {fmt(k['throughput_ok_per_s'], 2)} "
            f"| {fmt(k['server_p50_ms'])} | {fmt(k['server_p95_ms'])} | {fmt(k['server_p99_ms'])} "
            f"| {fmt(k['server_max_ms'])} | {fmt(k['client_p99_ms'])} | {pct(k['error_rate'])} | {pct(k['rate_429'])} "
            f"| {pct(k['fallback_rate'])} | {pct(k['cached_rate'])} | {k['dropped_iterations']:.0f} "
            f"| {'pass' if k['thresholds_ok'] else 'FAIL'} (p99 < {r['p99_threshold_ms']:g} ms) |"
        )
    return rows


def cached_ratio(results: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Warm-cache p99 over the `reference` scenario's p99 at each rate both ran."""
    by = {(r["scenario"], r["rate"]): r["k6"]["server_p99_ms"] for r in results}
    ranker = next((r["ranker"] for r in results if r["scenario"] == reference), reference)
    out = []
    for (scenario, rate), warm in sorted(by.items()):
        base = by.get((reference, rate))
        if scenario == "reasoning-warm" and base and warm is not None:
            out.append({"rate": rate, "reference": f"{reference} ({ranker})", "reference_p99_ms": base,
                        "warm_p99_ms": warm, "ratio": warm / base})
    return out


def overhead(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Share of server time outside the engine wait, per reasoning-uncached run (Prometheus sums)."""
    out = []
    for r in results:
        if r["scenario"] != "reasoning-uncached":
            continue
        request, stage = r["server"]["request"], r["server"]["stages"].get("reasoning")
        if not request["count"] or stage is None:
            continue
        total = request["mean_ms"] * request["count"]
        engine = stage["mean_ms"] * stage["count"]
        out.append({"load": load(r), "requests": request["count"], "mean_total_ms": request["mean_ms"],
                    "mean_engine_ms": engine / request["count"], "share": (total - engine) / total})
    return out


def targets(results: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    ratios = cached_ratio(results, "production") + cached_ratio(results, "popular")
    shares = overhead(results)
    worst_error = max((r["k6"]["error_rate"] for r in results), default=0.0)
    lines = ["| target | measured | met |", "|---|---|---|"]
    for row in ratios:
        lines.append(
            f"| cached p99 <= {TARGET_CACHED_P99_RATIO:g}x {row['reference']} p99 at {row['rate']:g}/s | "
            f"{fmt(row['warm_p99_ms'])} / {fmt(row['reference_p99_ms'])} ms = {row['ratio']:.2f}x | "
            f"{'yes' if row['ratio'] <= TARGET_CACHED_P99_RATIO else 'no'} |"
        )
    for row in shares:
        lines.append(
            f"| gateway overhead < {100 * TARGET_OVERHEAD_SHARE:g}% of request time, reasoning uncached, "
            f"{row['load']} "
            f"| {fmt(row['mean_total_ms'] - row['mean_engine_ms'])} of {fmt(row['mean_total_ms'])} ms = "
            f"{100 * row['share']:.2f}% | {'yes' if row['share'] < TARGET_OVERHEAD_SHARE else 'no'} |"
        )
    lines.append(f"| no errors other than deliberate 429s | worst error rate {pct(worst_error)} "
                 f"| {'yes' if worst_error == 0 else 'no'} |")
    return lines, {"cached_p99_ratio": ratios, "gateway_overhead": shares, "worst_error_rate": worst_error}


def stage_table(results: list[dict[str, Any]]) -> list[str]:
    rows = ["| scenario | load | stage | observations | mean ms | p50 <= ms | p99 <= ms |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        for stage, s in r["server"]["stages"].items():
            rows.append(f"| {r['scenario']} | {load(r)} | {stage} | {s['count']:.0f} | {fmt(s['mean_ms'], 2)} "
                        f"| {fmt(s['p50_le_ms'], 1)} | {fmt(s['p99_le_ms'], 1)} |")
    return rows


def engine_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| scenario | load | batches (method: count x mean rows) | mean queue wait ms | dropped unstarted "
        "| coalesced | late answers cached | 429 | fallbacks | generated tokens |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        engine, c = r["server"]["engine"], r["server"]["counters"]
        batches = ", ".join(
            f"{m}: {e['batches']:.0f} x {e['mean_rows']:.2f}" for m, e in engine.items() if "batches" in e
        )
        waits = ", ".join(f"{m}: {fmt(e['mean_queue_ms'])}" for m, e in engine.items() if "mean_queue_ms" in e)
        expired = sum(e.get("expired", 0) for e in engine.values())
        rows.append(
            f"| {r['scenario']} | {load(r)} | {batches or '-'} | {waits or '-'} | {expired:.0f} "
            f"| {c['coalesced']:.0f} | {c['late_results_cached']:.0f} | {c['rejected_429']:.0f} "
            f"| {c['fallback_timeout'] + c['fallback_engine_error']:.0f} | {c['generated_tokens']:.0f} |"
        )
    return rows


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        runs = [r for r in results if r["scenario"] == scenario and r["k6"]["server_p99_ms"] is not None
                and not r.get("users")]  # closed-model runs have no arrival rate: the tables show them
        if not runs:
            continue
        rates = [r["rate"] for r in runs]
        line = left.plot(rates, [r["k6"]["server_p99_ms"] for r in runs], marker="o", label=f"{scenario} p99")[0]
        left.plot(rates, [r["k6"]["server_p50_ms"] for r in runs], marker=".", linestyle="--", color=line.get_color(),
                  label=f"{scenario} p50")
        right.plot(rates, [r["k6"]["fallback_rate"] for r in runs], marker="o", color=line.get_color(),
                   label=f"{scenario} fallback")
        right.plot(rates, [r["k6"]["rate_429"] for r in runs], marker="x", linestyle=":", color=line.get_color(),
                   label=f"{scenario} 429")
    left.set(xscale="log", yscale="log", xlabel="arrival rate (requests/s)", ylabel="x-total-time (ms)",
             title="server time per request")
    right.set(xscale="log", xlabel="arrival rate (requests/s)", ylabel="share of requests", ylim=(-0.02, 1.02),
              title="fallback (of 200s) and 429 (of all)")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(meta: dict[str, Any], results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = out_dir / "latency.md", out_dir / "latency.json", out_dir / "latency.png"
    target_lines, target_figures = targets(results)
    js.write_text(json.dumps({"meta": meta, "targets": target_figures, "runs": results}, indent=1))
    plot(results, png)
    md.write_text("\n".join(header(meta) + ["", "## Targets", ""] + target_lines + [
        "", "## Results (k6, open model: constant arrival rate; times are the server's x-total-time unless marked "
        "client)",
        "", *results_table(results), "", "Rates: errors and 429 are shares of all requests, fallback and cached of the "
        "200 answers. dropped: arrivals k6 could not start (no free virtual user).", "",
        "## Server stages (Prometheus `reasonrec_stage_duration_seconds`, difference over each run; p50 and p99 "
        "as the upper bound of their histogram bucket)", "", *stage_table(results), "",
        "## Engine batching, coalescing, backpressure (Prometheus, per run)", "", *engine_table(results), "",
        f"![latency]({png.name})", "",
    ]))
    return [md, js, png]


def header(meta: dict[str, Any]) -> list[str]:
    m, ready = meta["machine_start"], meta["readiness"]
    production = meta["production_ranker"]
    stand_in = (f" (stand-in for sasrec: {meta['production_ranker_why']}; `--production-ranker sasrec` switches)"
                if production == "popular" else f" ({meta['production_ranker_why']})")
    return [
        "# Latency under load", "",
        f"Made by `make loadtest` (`{meta['command']}`) on {m['date_utc']} UTC; {m['cores']} x {m['cpu']}, "
        f"{m['memory_gb']} GB RAM, no GPU, Python {m['python']}. {meta['busy_note']}", "",
        f"- Gateway: model {ready.get('model')}, index {ready.get('index')}, cache {ready.get('cache')}; settings "
        f"`{json.dumps(meta['settings'])}`.",
        f"- Requests: `{meta['requests_file']}` (`python -m loadtests.requests --dataset {meta['dataset']}`): real "
        f"{meta['dataset']} histories, 20 interactions each (item id, rating, timestamp); the production ranker and "
        f"reasoning-warm replay the same pool of {meta['pool']} requests (warmed first); direct and "
        "reasoning-uncached never repeat a request.",
        f"- Rankers: production = `{production}`{stand_in}; reasoning requests send max_reasoning_tokens="
        f"{meta['reasoning_tokens']}.",
        "- Every number below comes from this one run; JSON with all figures beside this file (latency.json).",
    ]
