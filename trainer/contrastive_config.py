"""The settings of the contrastive LoRA job (`reasonrec train-cl`, `trainer.contrastive`): a dataclass with a
docstring per field, checked in `__post_init__` with errors that name the flag, and the recipe in words for the
adapter's metadata and the training report (`describe_recipe`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from model.paths import artifacts_dir
from trainer.protocols import SplitConfig


LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1
"""The cosine schedule ends at this fraction of the peak learning rate."""


@dataclass
class ContrastiveConfig(SplitConfig):
    """What `reasonrec train-cl` trains (defaults: the ML-1M leave-one-out run of the README)."""

    model: str = "smollm2"
    """Base LLM: smollm2, tiny or a local HF folder."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Linear layers that get a LoRA update."""
    lora_top_layers: int = 6
    """Only the top N decoder layers get LoRA; 0 = all layers. The layers below run without autograd records and
    the backward stops at layer N from the top, so a step costs about a no-grad forward plus N layers' worth of
    training: 16 x ~500-token users, one float32 core (Ice Lake), no-grad forward 24 s, + 16 s with the top 10
    layers recording for backward, + 15 s backward."""
    temperature: float = 0.05
    """Softmax temperature on cosine similarities."""
    logq: bool = True
    """Subtract log(expected count per batch) from in-batch logits, and log(probability of being drawn in the
    window) from the logits of cache rows in the window (popularity correction)."""
    cache_window: int = 16
    """Negatives from the cache are the rows written by the last N steps' targets (a cross-batch memory of recent,
    hardly drifted vectors); 0 = every row of the table, which drifts between re-encodings and teaches the model
    to tell newer rows from older ones (`trainer.contrastive_loss`)."""
    uniform_negatives: int = 32
    """Items drawn uniformly from the catalog each step, encoded with gradients as extra in-batch columns and then
    written into the cache window (mixed negative sampling, Yang et al. 2020), so tail items are pushed down too;
    0 = none. Each is one more item prompt in the training forward and backward."""
    frozen_items: bool = False
    """True: the adapter changes only the user side. Items keep the base model's vectors (its served index, which
    the adapter then shares), so the negative cache is exact and never drifts: every step scores each user against
    every item (full softmax; no sampling, so `logq`, `cache_window` and `uniform_negatives` do not apply), no step
    encodes items and no validation re-encodes them. Serving encodes items with the adapter switched off."""
    full_softmax: bool = False
    """True (items trained too): every step scores each user against every item of the cache table, which is
    re-encoded and re-centered at each validation and left alone in between, so all its rows come from one
    model and there is no newer-row shortcut; nothing is sampled for the user side, so `logq`, `cache_window`
    and `uniform_negatives` do not apply. The item side gets the same loss's gradient through fresh vectors of
    the batch's targets and of `item_draws` items drawn from the batch's softmax (importance-weighted,
    `trainer.contrastive_loss.draw_items`): an unbiased estimate of the full softmax's push on every item, tail
    items included, which sampled negatives lack."""
    item_draws: int = 32
    """With `full_softmax`: draws per step (with replacement; the distinct items are encoded with gradients)."""
    positives: int = 1
    """Positives per sample: its target and the next N - 1 items of the user's training sequence, each its own
    softmax term against the table with the same user vector (the future window of the dense all-action loss in
    Pancha et al., "PinnerFormer: Sequence Modeling for User Representation at Pinterest", KDD 2022): N times the
    item-side signal of one user prompt, the expensive forward. Only with `full_softmax` or `frozen_items` (the
    sampled loss has one positive per user)."""
    item_pairs: int = 0
    """With `full_softmax`: (item, next item) pairs per step, consecutive in a training sequence, each a softmax
    term of its first item's fresh vector against the table with the next item as the target and the item itself
    masked (item-to-item co-consumption, as Item2Vec learns it: Barkan and Koenigstein, "Item2Vec: Neural Item
    Embedding for Collaborative Filtering", 2016), added to the users' loss. It trains the table's geometry
    directly, so that an item lies near those consumed after it, which `reasonrec probe-items` found missing on the
    base table, at the cost of short item prompts instead of ~500-token user prompts; 0 = none."""
    stats_dropout: float = 0.0
    """Probability that an item prompt of a training step (a target, a drawn or a uniform item) is written without
    its rating line ("Average rating: ... from N ratings"), as a cold item's prompt reads (DropoutNet's input
    dropout, Volkovs et al., "DropoutNet: Addressing Cold Start in Recommender Systems", NeurIPS 2017): the item
    side learns to place an item by its content when its ratings are missing, instead of learning that such items
    are never taken. The table, validation and serving keep the full prompts. Not with `frozen_items` (no item is
    encoded in training)."""
    popularity_prior: float = 0.0
    """w: training logits are (cosine + w x log(1 + training count)) / temperature, the score the service computes
    with REASONREC_POPULARITY_PRIOR=w, so the cosine only has to learn what popularity does not explain (only with
    `frozen_items`: with sampled negatives the logQ correction already removes popularity from the cosine)."""
    sample_pool: int = 0
    """0: every step draws fresh samples. N > 0 (only with LoRA on the top layers only): a fixed, seeded pool of
    N samples (distinct users while they last), batched by prompt length, that the steps cycle through in a new
    shuffled order each pass. The hidden states entering the first LoRA layer are computed once per prompt
    (pooled user, validation user, item) and kept in memory and on disk in `lower-states/` of the adapter folder
    (~1.2 MB per 500-token user prompt; 2.1 GB for 960 + 300 ML-1M users and 3,704 items; `trainer.layer_cache`),
    so after the first pass a step, a validation and a re-encoding of the item cache run only the top layers."""
    lr: float = 3e-4
    """AdamW learning rate (peak, reached after `warmup_steps`)."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up."""
    lr_schedule: str = "constant"
    """After warm-up: "constant" (a finished run can be continued with a larger --steps) or "cosine", half a cosine
    from `lr` down to lr / 10 at the last of `steps` (Loshchilov and Hutter, "SGDR", ICLR 2017, without restarts),
    so the last steps settle instead of oscillating around the optimum; its `steps` is part of the run's
    settings, so it cannot be continued."""
    batch_size: int = 16
    """Users per step."""
    steps: int = 400
    """Training steps in all (raise it and rerun to continue a finished run)."""
    recent_targets: int = 50
    """Targets are drawn from each user's most recent N training interactions."""
    item_batch_size: int = 16
    """Item prompts per forward pass when (re-)encoding the cache."""
    init_from_index: bool = True
    """Start the negative cache from the base model's served index (`reasonrec index`) when it exists: no
    encoding pass at step 0, and the index's center is the training center, as the service will use it."""
    valid_users: int = 300
    """Seeded validation users for the curve and the best-adapter choice (at 300 one hit moves HR@10 by .0033);
    warm validation examples only with held-out items (`validation_examples`)."""
    valid_every: int = 50
    """Validate every N steps (and at the end). Each validation re-encodes every item into the negative cache
    (3,704 ML-1M items: ~15 min on one CPU core), so this is also how often the cache is made consistent again;
    between validations its rows are overwritten one batch of targets at a time."""
    checkpoint_minutes: float = 5.0
    """Write `resume.pt` at least this often."""
    mixed_precision: str = "no"
    """"bf16" runs the training forward/backward under bfloat16 autocast (torch.autocast): about 2x faster on CPUs with
    AMX (measured 12.4 s vs 28.2 s for a 16 x 500-token forward on one Sapphire Rapids core) and on GPUs, but
    slower on CPUs without bf16 units (an Ice Lake core: 72-80 s vs 51 s for the same forward with grad);
    "no" keeps float32. Validation, the item cache and serving stay float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: less memory for more compute, worth it
    with LoRA on all layers or long prompts on a GPU (top-6 LoRA, batch 16, float32 peaks at ~7 GiB without it).
    It does not change the result, so a run may be resumed with it switched."""
    seed: int = 0
    """Seed of LoRA initialization, sampling and the validation sample."""
    out_dir: Path | None = None
    """Adapter folder; default `artifacts/adapters/<dataset>-<protocol>-cl-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.lora_modules = tuple(self.lora_modules)
        super().__post_init__()
        positive = {"lora_r": self.lora_r, "batch_size": self.batch_size, "steps": self.steps,
                    "recent_targets": self.recent_targets, "item_batch_size": self.item_batch_size,
                    "valid_users": self.valid_users, "valid_every": self.valid_every, "item_draws": self.item_draws,
                    "positives": self.positives}
        bad = [name for name, value in positive.items() if value < 1]
        if bad:
            raise ValueError(f"--{bad[0].replace('_', '-')} must be >= 1")
        if self.temperature <= 0 or self.lr <= 0 or self.checkpoint_minutes <= 0:
            raise ValueError("--temperature, --lr and --checkpoint-minutes must be positive")
        if self.batch_size < 2:
            raise ValueError("--batch-size must be >= 2 (in-batch negatives)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")
        if self.sample_pool < 0 or (self.sample_pool and self.lora_top_layers < 1):
            raise ValueError("--sample-pool must be >= 0 and needs --lora-top-layers >= 1 (states below are cached)")
        if self.full_softmax and self.frozen_items:
            raise ValueError("--full-softmax trains the item side; --frozen-items keeps it (and is a full softmax)")
        if self.item_pairs < 0 or (self.item_pairs and not self.full_softmax):
            raise ValueError("--item-pairs must be >= 0 and needs --full-softmax")
        if self.positives > 1 and not (self.full_softmax or self.frozen_items):
            raise ValueError("--positives > 1 needs --full-softmax or --frozen-items")
        if not 0 <= self.stats_dropout <= 1 or (self.stats_dropout and self.frozen_items):
            raise ValueError("--stats-dropout must be in [0, 1] and needs the item side trained (not --frozen-items)")
        if self.popularity_prior < 0 or (self.popularity_prior and not self.frozen_items):
            raise ValueError("--popularity-prior must be >= 0 and needs --frozen-items")
        if min(self.lora_top_layers, self.warmup_steps, self.cache_window, self.uniform_negatives) < 0:
            raise ValueError("--lora-top-layers, --warmup-steps, --cache-window and --uniform-negatives must be >= 0")

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` for optimizer step `step` (0-based): linear warm-up, then the schedule."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.lr_schedule == "constant":
            return 1.0
        done = min(1.0, (step - self.warmup_steps) / max(1, self.steps - 1 - self.warmup_steps))
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * done))

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-cl-seed{self.seed}"

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where or how often it is saved)."""
        skip = {"out_dir", "checkpoint_minutes", "gradient_checkpointing"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in skip}


ADDED_SETTINGS = {"frozen_items": False, "popularity_prior": 0.0, "sample_pool": 0, "full_softmax": False,
                  "item_draws": 32, "positives": 1, "stats_dropout": 0.0, "item_pairs": 0, "lr_schedule": "constant"}
"""Settings added after runs were made; such a run had their default."""


def describe_recipe(config: dict) -> str:
    """The run's loss and negatives in words, from its stored settings (`ContrastiveConfig.fingerprint`; settings
    a run predates take their default): the adapter metadata's `method` and the training report's recipe."""
    config = {**ADDED_SETTINGS, **config}
    if config["frozen_items"]:
        prior = (f", popularity prior {config['popularity_prior']} in the logits: (cosine + "
                 f"{config['popularity_prior']} x log(1 + training count)) / temperature"
                 if config["popularity_prior"] else "")
        return ("on user prompts only: full softmax over every item's base-model vector (an exact table, never "
                f"re-encoded; nothing sampled, so no logQ){prior}{_positives(config)}{_pool(config)}")
    if config["full_softmax"]:
        return ("on user and item prompts: full softmax over every item's vector in a table re-encoded and "
                f"re-centered at every validation (every {config['valid_every']} steps), nothing sampled for users; "
                f"items get its gradient through the targets and {config['item_draws']} items drawn per step from "
                f"the batch's softmax, importance-weighted{_positives(config)}{_pairs(config)}"
                f"{_stats(config)}{_pool(config)}")
    return (f"on user and item prompts: in-batch softmax, logQ {'on' if config['logq'] else 'off'}; the item cache is "
            f"re-encoded and re-centered at every validation (every {config['valid_every']} steps) and overwritten "
            "with each batch's targets in between; its negatives "
            + (f"are the rows written by the last {config['cache_window']} steps" if config['cache_window']
               else "are all its rows")
            + (f", plus {config['uniform_negatives']} items drawn uniformly per step (in-batch columns with "
               "gradients, then written into it)" if config['uniform_negatives'] else "")
            + _stats(config) + _pool(config))


def _positives(config: dict) -> str:
    return (f"; each sample's target and the next {config['positives'] - 1} items of the user's training sequence are "
            "positives, each its own softmax term" if config["positives"] > 1 else "")


def _pairs(config: dict) -> str:
    return (f"; plus {config['item_pairs']} (item, next item) pairs per step from training sequences, each item's "
            "fresh vector scored against the table with the next item as its target" if config["item_pairs"] else "")


def _stats(config: dict) -> str:
    return (f"; each training item prompt drops its rating line with probability {config['stats_dropout']} (as a cold "
            "item's reads)" if config["stats_dropout"] else "")


def _pool(config: dict) -> str:
    return (f"; the steps cycle through a fixed pool of {config['sample_pool']} samples, every prompt's states below "
            "the LoRA layers computed once" if config["sample_pool"] else "")
