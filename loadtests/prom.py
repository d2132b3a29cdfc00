"""Reading the gateway's /metrics around a load-test run: two scrapes, their difference, and per-run figures:
counter increments, histogram means, and histogram quantiles as the upper bound of the bucket that holds them
(exact about what a histogram knows; interpolating inside a bucket, as PromQL's `histogram_quantile` does,
invents precision: a 0.1 ms search would read as 0.5 ms in the 0-1 ms bucket).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """Every sample of one scrape: {(sample name, sorted labels): value}."""

    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def minus(self, before: Scrape) -> Scrape:
        return Scrape({key: value - before.samples.get(key, 0.0) for key, value in self.samples.items()})

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def label_values(self, name: str, label: str) -> list[str]:
        return sorted({dict(ls)[label] for (n, ls) in self.samples if n == name and label in dict(ls)})

    def histogram(self, name: str, **labels: str) -> Histogram:
        wanted = set(labels.items())
        buckets: dict[float, float] = defaultdict(float)
        for (n, ls), v in self.samples.items():
            if n == f"{name}_bucket" and wanted <= set(ls):
                buckets[float(dict(ls)["le"])] += v
        total, count = self.value(f"{name}_sum", **labels), self.value(f"{name}_count", **labels)
        return Histogram(sorted(buckets.items()), total, count)


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]
    """(upper bound, cumulative count), ascending, ending with +Inf."""
    total: float
    count: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def bound(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (+inf beyond the last finite bound)."""
        if not self.count:
            return math.nan
        return next((upper for upper, cumulative in self.buckets if cumulative >= q * self.count), math.inf)


def scrape(base_url: str) -> Scrape:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Scrape(samples)


def stage_figures(diff: Scrape) -> dict[str, dict[str, float]]:
    """Per stage: observations, mean milliseconds, and the bucket bounds of p50 and p99 over the run."""
    out = {}
    for stage in diff.label_values("reasonrec_stage_duration_seconds_count", "stage"):
        h = diff.histogram("reasonrec_stage_duration_seconds", stage=stage)
        if h.count:
            out[stage] = {"count": h.count, "mean_ms": 1000 * h.mean, "p50_le_ms": 1000 * h.bound(0.5),
                          "p99_le_ms": 1000 * h.bound(0.99)}
    return out


def engine_figures(diff: Scrape) -> dict[str, dict[str, float]]:
    """Per batcher method: batches, mean rows per batch; per queued method: mean queue wait; drops."""
    out: dict[str, dict[str, float]] = {}
    for method in diff.label_values("reasonrec_engine_batch_rows_count", "method"):
        h = diff.histogram("reasonrec_engine_batch_rows", method=method)
        if h.count:
            out.setdefault(method, {}).update({"batches": h.count, "mean_rows": h.mean})
    for method in diff.label_values("reasonrec_engine_queue_seconds_count", "method"):
        h = diff.histogram("reasonrec_engine_queue_seconds", method=method)
        if h.count:
            out.setdefault(method, {}).update({"queued_calls": h.count, "mean_queue_ms": 1000 * h.mean})
    for method in diff.label_values("reasonrec_engine_expired_total", "method"):
        out.setdefault(method, {})["expired"] = diff.value("reasonrec_engine_expired_total", method=method)
    return out


def counter_figures(diff: Scrape) -> dict[str, float]:
    return {
        "rejected_429": diff.value("reasonrec_rejected_total"),
        "fallback_timeout": diff.value("reasonrec_fallback_total", reason="timeout"),
        "fallback_engine_error": diff.value("reasonrec_fallback_total", reason="engine_error"),
        "coalesced": diff.value("reasonrec_coalesced_total"),
        "late_results_cached": diff.value("reasonrec_late_results_total"),
        "cache_hit": diff.value("reasonrec_cache_total", result="hit"),
        "cache_miss": diff.value("reasonrec_cache_total", result="miss"),
        "generated_tokens": diff.value("reasonrec_generated_tokens_total"),
    }


def request_figures(diff: Scrape, ranker: str) -> dict[str, float]:
    h = diff.histogram("reasonrec_request_duration_seconds", endpoint="/recommend", ranker=ranker)
    return {"count": h.count, "mean_ms": 1000 * h.mean, "p50_le_ms": 1000 * h.bound(0.5),
            "p99_le_ms": 1000 * h.bound(0.99)}
