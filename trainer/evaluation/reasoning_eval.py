"""Evaluation of the model's own reasoning (`reasonrec eval-reasoning`; issue 27): does it finish its analysis with
`<answer>` within the budget, is what it says true of the history, and does its conclusion name the next item's
genre more often than always naming the user's top genre would?

On seeded test users (the eval job's reasoning users: `sample_examples` of its `llm_users` sample, seed
`sample_seed`), the served engine path (`TransformersEngine.reason`, greedy, `reasoning_tokens` budget) writes a
reasoning per user, then:
- marker rate: share of reasonings where the model wrote `<answer>` itself (`Reasoning.wrote_marker`);
- reasoning length: generated tokens;
- faithfulness: share of the claims read back from the reasoning (`trainer.reasoning.checker`, the generator's own
  templates) that are true of the history the prompt showed; sentences no template reads are reported apart;
- next-genre match: the conclusion's genre is one of the next item's genres, against the baseline that always names
  the window's top genre (and the same for the decade), with a paired bootstrap interval of the difference;
- latency: seconds per request in batches of `batch_size`, and single requests one at a time (p50).
The report (`docs/results/<dataset>-reasoning.{md,json}`) names the command, data, split, users, model, adapter,
seed and machine and shows examples, good and bad. Reasoning before the recommendation state as in R2ec ("Towards
Large Recommender Models with Reasoning").
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.engines.base import Engine
from model.rankers.llm import LlmRanker
from trainer.data.protocols import SplitConfig, test_parts
from trainer.data.splits import Example, sample_examples
from trainer.evaluation.harness import user_history
from trainer.machine import machine_line
from trainer.reasoning.checker import Check, check_text, prediction_matches
from trainer.reasoning.facts import ReasoningContext, decade_of
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


@dataclass
class ReasoningEvalConfig(SplitConfig):
    """What `reasonrec eval-reasoning` measures."""

    model: str = "smollm2"
    """LLM: smollm2, tiny or a local HF folder."""
    adapter: Path | None = None
    """The reasoning adapter (`reasonrec train-reasoning`); none = the base model."""
    users: int = 100
    """Seeded test users (of the "all" test part), the eval job's reasoning users."""
    llm_users: int = 1000
    """The eval job's direct sample the users are drawn from (keep its value to get the same users)."""
    sample_seed: int = 0
    """Seed of the user samples."""
    reasoning_tokens: int = 48
    """Token budget of each reasoning (the served default)."""
    batch_size: int = 16
    """Prompts per engine call."""
    latency_users: int = 5
    """Users also run one request at a time for the single-request latency; 0 = none."""
    examples: int = 3
    """Example reasonings of each kind (good, bad) in the report."""
    out_dir: Path = Path("docs/results")
    """Where the markdown and JSON reports go."""
    report_name: str | None = None
    """File name of the report without suffix; default `<dataset>-reasoning`."""

    def __post_init__(self) -> None:
        self.adapter = Path(self.adapter) if self.adapter is not None else None
        self.out_dir = Path(self.out_dir)
        super().__post_init__()
        if not 1 <= self.users <= self.llm_users or self.reasoning_tokens < 1 or self.batch_size < 1:
            raise ValueError("--users must be in [1, --llm-users]; --reasoning-tokens and --batch-size >= 1")
        if self.latency_users < 0 or self.examples < 0:
            raise ValueError("--latency-users and --examples must be >= 0")


def run_reasoning_eval(config: ReasoningEvalConfig, command: str) -> list[Path]:
    """Run the evaluation and write its reports; returns their paths."""
    from model.engines.transformers_engine import load_engine
    from trainer.reasoning.report import write_reasoning_report

    ds, split = config.load()
    context = ReasoningContext(ds.catalog)
    examples = sample_examples(sample_examples(test_parts(split)["all"], config.llm_users, config.sample_seed),
                               config.users, config.sample_seed)
    engine = load_engine(config.model, config.adapter, config.batch_size)
    scores = score_reasonings(engine, examples, context, config.reasoning_tokens, batch_size=config.batch_size)
    scores.single_seconds = single_latencies(engine, examples[: config.latency_users], context,
                                             config.reasoning_tokens)
    meta = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_line(),
            "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                     "interactions": ds.n_interactions},
            "split": split.protocol, "model": engine.fingerprint.to_json(),
            "adapter": str(config.adapter) if config.adapter else None, "adapter_meta": _adapter_meta(config.adapter),
            "users": f"{config.users} seeded test users (sample_examples of {config.llm_users}, seed "
                     f"{config.sample_seed})", "reasoning_tokens": config.reasoning_tokens,
            "batch_size": config.batch_size}
    name = config.report_name or f"{config.dataset}-reasoning"
    return write_reasoning_report(config.out_dir / name, meta, scores, config.examples, context)


def _adapter_meta(adapter: Path | None) -> dict | None:
    from model.engines.loading import ADAPTER_META

    path = adapter / ADAPTER_META if adapter is not None else None
    if path is None or not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {k: meta.get(k) for k in ("status", "config", "pool", "steps", "samples_seen", "train_seconds",
                                     "loss_last10", "final_check", "machine")}
