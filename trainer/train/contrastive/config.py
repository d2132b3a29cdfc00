"""The settings of the contrastive LoRA job (`reasonrec train-cl`, `trainer.train.contrastive.job`): a dataclass with a
docstring per field (its defaults are the measured CPU recipe, `trainer/recipes/cl-cpu.toml`), checked in
`__post_init__` with errors that name the flag; and the recipe in words for
the adapter's metadata and the training report (`describe_recipe`). The adapter is LoRA (Hu et al., "LoRA: Low-Rank
Adaptation of Large Language Models", ICLR 2022).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from indexer.core.paths import artifacts_dir
from trainer.data.protocols import SplitConfig
from trainer.train.lora import LoraSettings


@dataclass
class ContrastiveConfig(SplitConfig, LoraSettings):
    """What `reasonrec train-cl` trains; the defaults are the full-softmax recipe measured on ML-1M with two CPU
    cores (`docs/training-cl.md`); the LoRA settings are `trainer.train.lora.LoraSettings`'."""

    temperature: float = 0.05
    """Softmax temperature on the centered cosine similarities of user and item vectors."""
    item_draws: int = 32
    """Items drawn per step (with replacement, half from the batch's softmax, half uniform) whose fresh vectors
    carry the item side's full-softmax gradient, importance-weighted; the distinct ones are encoded with gradients."""
    sample_pool: int = 960
    """Size in samples of a fixed, seeded training pool that the steps cycle through, each prompt's hidden states
    below the LoRA layers computed once (needs lora_top_layers >= 1); 0 = fresh samples every step."""
    lr: float = 2e-4
    """Peak AdamW learning rate, reached after warmup_steps and then kept constant."""
    warmup_steps: int = 10
    """Steps of linear learning-rate warm-up."""
    batch_size: int = 16
    """Users (training samples) per step."""
    steps: int = 120
    """Training steps in all; raise it and rerun to continue a finished run."""
    recent_targets: int = 50
    """Targets are drawn from each user's most recent N training interactions."""
    item_batch_size: int = 16
    """Item prompts per forward pass when (re-)encoding the item table."""
    init_from_index: bool = True
    """Start the item table from the base model's served index (`reasonrec index`) when it exists, instead of
    encoding every item at step 0."""
    valid_users: int = 300
    """Seeded validation users for the curve and the best-adapter choice."""
    valid_every: int = 10
    """Steps between validations; each one re-encodes and re-centers the whole item table first."""
    checkpoint_minutes: float = 5.0
    """Minutes between writes of `resume.pt` (at most)."""
    mixed_precision: str = "no"
    """"bf16" runs the training forward and backward under bfloat16 autocast (for GPUs and CPUs with AMX); "no"
    keeps float32. Validation and the item table stay float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: less memory for more compute; it does
    not change the result, so a run may be resumed with it switched."""
    seed: int = 0
    """Seed of LoRA initialization, sampling and the validation sample."""
    out_dir: Path | None = None
    """Adapter folder; default `artifacts/adapters/<dataset>-<protocol>-cl-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        super().__post_init__()
        self.check_lora()
        at_least_one = {"batch_size": self.batch_size, "steps": self.steps,
                        "recent_targets": self.recent_targets,
                        "item_batch_size": self.item_batch_size, "valid_users": self.valid_users,
                        "valid_every": self.valid_every, "item_draws": self.item_draws}
        bad = [name for name, value in at_least_one.items() if value < 1]
        if bad:
            raise ValueError(f"--{bad[0].replace('_', '-')} must be >= 1")
        for name in ("temperature", "lr", "checkpoint_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if self.warmup_steps < 0:
            raise ValueError("--warmup-steps must be >= 0")
        if self.sample_pool < 0 or (self.sample_pool and self.lora_top_layers < 1):
            raise ValueError("--sample-pool must be >= 0 and needs --lora-top-layers >= 1 (states below are cached)")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` for optimizer step `step` (0-based): linear warm-up, then constant."""
        return (step + 1) / (self.warmup_steps + 1) if step < self.warmup_steps else 1.0

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-cl-seed{self.seed}"

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where or how often it is saved)."""
        skip = {"out_dir", "checkpoint_minutes", "gradient_checkpointing"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in skip}


def describe_recipe(config: dict) -> str:
    """The run's loss in words, from its stored settings (`ContrastiveConfig.fingerprint`): the adapter metadata's
    `method` and the training report's recipe."""
    pool = (f"; the steps cycle through a fixed pool of {config['sample_pool']} samples, every prompt's states below "
            "the LoRA layers computed once" if config["sample_pool"] else "")
    return ("on user and item prompts: full softmax over every item's vector in a table re-encoded and re-centered "
            f"at every validation (every {config['valid_every']} steps), nothing sampled for users; items get its "
            f"gradient through the targets and {config['item_draws']} items drawn per step from the batch's softmax, "
            f"importance-weighted{pool}")
