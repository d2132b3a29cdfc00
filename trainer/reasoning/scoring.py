"""Scoring the model's own reasoning (the served engine path, greedy): does it write `<answer>` itself, are its
claims true of the history (`trainer.reasoning.checker`), does its conclusion name the next item's genre and
decade more often than the window's top genre and decade would; and its latency. Used by `reasonrec
eval-reasoning` (`trainer.evaluation.reasoning_eval`) and by the SFT job's final check."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from model.claims import decade_of, prediction_matches
from model.engines.base import Engine
from model.rankers.llm import LlmRanker
from trainer.data.splits import Example
from trainer.protocol.harness import user_history
from trainer.reasoning.checker import Check, check_text
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.rationales import example_facts


@dataclass(frozen=True)
class ScoredReasoning:
    """One user's reasoning and what was found in it."""

    example: Example
    text: str
    wrote_marker: bool
    tokens: int
    check: Check
    match: tuple[bool, bool]
    """(genre, decade) of the conclusion right about the next item."""
    baseline: tuple[bool, bool]
    """(genre, decade) of the window's top genre and decade right about the next item."""


@dataclass
class ReasoningScores:
    """The scored reasonings of one run and the seconds the engine took for them in batches."""

    rows: list[ScoredReasoning]
    seconds: float
    single_seconds: list[float] = field(default_factory=list)

    def summary(self, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
        rows, n = self.rows, len(self.rows)
        claims = sum(r.check.claims for r in rows)
        out: dict[str, Any] = {
            "users": n, "marker_rate": _share(r.wrote_marker for r in rows),
            "tokens_mean": statistics.mean(r.tokens for r in rows) if rows else None,
            "tokens_max": max((r.tokens for r in rows), default=None),
            "claims": claims, "faithfulness": sum(r.check.true_claims for r in rows) / claims if claims else None,
            "faithful_reasonings": _share(r.check.faithful for r in rows),
            "with_unparsed_sentences": _share(bool(r.check.parsed.unparsed) for r in rows),
            "with_prediction": _share(r.check.parsed.prediction is not None for r in rows),
            "genre_match": _share(r.match[0] for r in rows), "genre_baseline": _share(r.baseline[0] for r in rows),
            "decade_match": _share(r.match[1] for r in rows), "decade_baseline": _share(r.baseline[1] for r in rows),
            "seconds_per_request_batched": self.seconds / n if n else None,
        }
        kinds: dict[str, list[int]] = {}
        for r in rows:
            for claim, ok in zip(r.check.parsed.claims, r.check.verdicts, strict=True):
                kinds.setdefault(type(claim).__name__, [0, 0])[0 if ok else 1] += 1
        out["claims_by_kind"] = {k: {"true": t, "false": f} for k, (t, f) in sorted(kinds.items())}
        if self.single_seconds:
            out["seconds_per_request_single_p50"] = statistics.median(self.single_seconds)
            out["single_requests"] = len(self.single_seconds)
        if n:
            for part, index in (("genre", 0), ("decade", 1)):
                diff = np.array([r.match[index] - r.baseline[index] for r in rows], dtype=np.float64)
                draws = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))
                low, high = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
                out[f"{part}_match_minus_baseline_ci95"] = [float(low), float(high)]
        return out


def _share(flags: Any) -> float | None:
    values = [bool(f) for f in flags]
    return sum(values) / len(values) if values else None


def score_reasonings(engine: Engine, examples: list[Example], context: ReasoningContext, tokens: int,
                     desc: str = "reasoning", batch_size: int = 16) -> ReasoningScores:
    """Greedy reasoning for each example through the engine's `reason` (the served path), checked and scored."""
    prompts = [LlmRanker.prompt(user_history(e, context.catalog)) for e in examples]
    outputs, started = [], time.perf_counter()
    for first in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch"):
        outputs += engine.reason(prompts[first : first + batch_size], tokens)
    seconds = time.perf_counter() - started
    rows = []
    for example, out in zip(examples, outputs, strict=True):
        facts = example_facts(example, context)
        check = check_text(out.text, facts, context.genres)
        target = context.catalog[example.target.item_id]
        top_genre = facts.top_genres[0] if facts.top_genres else None
        top_decade = facts.top_decades[0] if facts.top_decades else None
        baseline = (top_genre in target.genres, top_decade is not None and top_decade == decade_of(target.year))
        rows.append(ScoredReasoning(example, out.text, out.wrote_marker, out.generated_tokens, check,
                                    prediction_matches(check.parsed.prediction, target), baseline))
    return ReasoningScores(rows, seconds)


def single_latencies(engine: Engine, examples: list[Example], context: ReasoningContext, tokens: int) -> list[float]:
    """Seconds of one `reason` call per example, one request at a time (a quiet server's latency)."""
    times = []
    for example in tqdm(examples, desc="single requests", unit="request"):
        started = time.perf_counter()
        engine.reason([LlmRanker.prompt(user_history(example, context.catalog))], tokens)
        times.append(time.perf_counter() - started)
    return times
