"""The settings of the evaluation job (`reasonrec eval`, `trainer.evaluation.job`) and its seeded user samples:
one module the job and its language-model side (`trainer.evaluation.llm`) both read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data.protocols import SplitConfig
from trainer.data.splits import Example, sample_examples

DEFAULT_RANKERS: tuple[str, ...] = ("sasrec", "popular", "content", "table", "table-content", "direct", "head",
                                    "reasoning")
RANKERS: tuple[str, ...] = (*DEFAULT_RANKERS, "direct-cosine", "direct-zero-shot")
LLM_RANKERS = ("direct", "head", "reasoning", "direct-cosine", "direct-zero-shot")
TABLE_RANKERS = ("table", "table-content")
ZERO_SHOT = "direct-zero-shot"
"""The base model's `direct` ranker beside an adapter's (only with --adapter), on the same user sample."""


@dataclass
class EvalConfig(SplitConfig):
    """What `reasonrec eval` evaluates."""

    rankers: tuple[str, ...] = DEFAULT_RANKERS
    """Rankers to evaluate: sasrec, popular, content, table (s alone), table-content (g(c) only), direct (the
    served s + f(h)), head (f(h) alone), reasoning, direct-cosine (raw states, no table), direct-zero-shot (with
    --adapter: the base model's cosine ranking)."""
    table: Path | None = None
    """Item-table artifact; default the one `reasonrec train-table` writes for this protocol (seed 0) when done."""
    twins: int = 100
    """With the table ranker: items given a hot-added twin for the twin check (`trainer.evaluation.twins`); 0 = no
    check."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ checkpoint folder; default the one `reasonrec train-sasrec` writes for this protocol (seed 0)."""
    model: str = "smollm2"
    """LLM: smollm2, tiny or a local HF folder."""
    adapter: Path | None = None
    """Optional peft LoRA adapter on the LLM (its index must be built with the same adapter)."""
    index_dir: Path | None = None
    """Item index of the LLM; default the one `reasonrec index` builds for this model and adapter."""
    llm_users: int = 1000
    """Seeded users per test part for the direct ranker and direct ratings."""
    reasoning_users: int = 100
    """Seeded users per test part for the reasoning ranker and reasoning ratings (a subset of the above)."""
    reasoning_tokens: int = 48
    """Token budget of the reasoning ranker (the service's default, `REASONREC_DEFAULT_REASONING_TOKENS`)."""
    popularity_prior: float = 0.0
    """Weight w of the popularity prior of the LLM rankers (`indexer.prior`): score = cosine + w x log(1 + the
    item's number of training interactions); 0 = plain cosine, as the service's default."""
    llm_batch_size: int = 8
    """Prompts per engine call."""
    ratings: bool = True
    """Also evaluate rating prediction (leave-one-out only)."""
    sample_seed: int = 0
    """Seed of the user samples."""
    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap."""
    out_dir: Path = Path("docs/results")
    """Where the markdown, JSON and PNG reports go."""
    trec_dir: Path | None = None
    """If set, write each ranker's top-100 run and the qrels there in TREC format."""
    cache_dir: Path | None = None
    """Disk cache of LLM vectors and ratings (resumable); default `artifacts/eval-cache`."""

    def __post_init__(self) -> None:
        for name in ("sasrec_checkpoint", "table", "adapter", "index_dir", "trec_dir", "cache_dir"):
            value = getattr(self, name)
            setattr(self, name, Path(value) if value is not None else None)
        self.out_dir = Path(self.out_dir)
        super().__post_init__()
        unknown = [r for r in self.rankers if r not in RANKERS]
        if unknown or not self.rankers:
            raise ValueError(f"--rankers must name some of {', '.join(RANKERS)}; unknown: {unknown}")
        if ZERO_SHOT in self.rankers and self.adapter is None:
            raise ValueError(f"--rankers {ZERO_SHOT} compares against an adapter: pass --adapter too")
        if self.llm_users < 1 or not 1 <= self.reasoning_users <= self.llm_users:
            raise ValueError("--llm-users must be >= 1 and --reasoning-users in [1, --llm-users]")
        if not 0 <= self.popularity_prior < float("inf"):
            raise ValueError(f"--popularity-prior must be a finite number >= 0, got {self.popularity_prior}")
        if self.reasoning_tokens < 0 or self.llm_batch_size < 1 or self.bootstrap < 1:
            raise ValueError("--reasoning-tokens must be >= 0, --llm-batch-size and --bootstrap >= 1")

    @property
    def stem(self) -> str:
        return f"{self.dataset}-{self.protocol}"


@dataclass
class Samples:
    """Per base test part: every example, the direct sample and the (nested) reasoning sample."""

    parts: dict[str, list[Example]]
    direct: dict[str, list[Example]]
    reasoning: dict[str, list[Example]]

    def of(self, sample: str) -> dict[str, list[Example]]:
        return {"all": self.parts, "direct-sample": self.direct, "reasoning-sample": self.reasoning}[sample]


def draw_samples(parts: dict[str, list[Example]], config: EvalConfig) -> Samples:
    direct = {p: sample_examples(e, config.llm_users, config.sample_seed) for p, e in parts.items()}
    reasoning = {p: sample_examples(e, config.reasoning_users, config.sample_seed) for p, e in direct.items()}
    return Samples(parts, direct, reasoning)
