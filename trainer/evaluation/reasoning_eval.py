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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainer.data.protocols import SplitConfig, test_parts
from trainer.data.splits import sample_examples
from trainer.evaluation.reasoning_report import write_reasoning_report
from trainer.machine import machine_line
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.scoring import score_reasonings, single_latencies


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
