"""The contrastive LoRA training job (`reasonrec train-cl`, `make train-cl`): teach the LLM to put a user's
`direct` vector next to the vector of the item they take next (DESIGN.md section 5, CL; the samples are drawn by
`trainer.cl_samples`, the loss and its negative cache are in `trainer.contrastive_loss`).

Step 0 fills the negative cache with the base model's item vectors: from its served index when `reasonrec index`
has built one (then the index's center is the training center too), else by encoding every training item (cached
on disk per batch, so an interrupted start resumes). Validation (every `valid_every` steps) first re-encodes
every item with the current model and re-centers the cache on their mean, as the adapter's served index will be
(between validations rows drift apart, see `trainer.contrastive_loss`), then ranks a seeded sample of
validation users against it with history excluded (also with the popularity prior of `indexer.prior` at each
weight of `trainer.prior_tuning.PRIOR_WEIGHTS`, reporting the best) and keeps the best adapter by NDCG@10 (with
the training's own prior, 0 by default) in the output folder, with `reasonrec-adapter.json` (base model,
templates, data, split, steps, metrics, curve). With `frozen_items` the adapter is for user prompts only: the
cache is the base model's exact item table, never re-encoded, and each step's loss is a full softmax over it.
With `full_softmax` both sides train against the whole table, which only validation rewrites
(`trainer.contrastive_loss`). With `sample_pool` the steps cycle through a fixed pool of samples and every prompt
passes the frozen layers below the LoRA layers once (`trainer.layer_cache`), so steps, validations and
re-encodings run the top layers only.
`resume.pt` (LoRA weights, optimizer, cache, progress) is written every `checkpoint_minutes`; rerunning the same
command resumes, and is a no-op once the run is done. Devices come from accelerate: the same command runs on a
CPU or a GPU.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from indexer.store import ItemStore
from model.loading import ADAPTER_META, load_model
from model.paths import artifacts_dir, default_index_dir
from model.prompts import RATING_TEMPLATE_VERSION
from model.transformers_engine import TransformersEngine
from trainer.batch_cache import BatchCache
from trainer.cl_samples import TrainingSamples
from trainer.contrastive_loss import (NegativeCache, contrastive_loss, draw_items, full_softmax_loss, history_mask,
                                      item_side_term, log_drawn_in_window, table_logits)
from trainer.data import Dataset, load_dataset
from trainer.evaluate import rank_examples
from trainer.layer_cache import LowerLayerCache
from trainer.llm_rankers import encode_items
from trainer.machine import machine_line
from trainer.metrics import mean_metrics
from trainer.prior_tuning import PRIOR_WEIGHTS
from trainer.protocols import SplitConfig, check_same_run, make_split
from trainer.splits import ColdSplit, Example, Split, sample_examples

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


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
    """AdamW learning rate (constant after `warmup_steps`)."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up."""
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
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")
        if self.sample_pool < 0 or (self.sample_pool and self.lora_top_layers < 1):
            raise ValueError("--sample-pool must be >= 0 and needs --lora-top-layers >= 1 (states below are cached)")
        if self.full_softmax and self.frozen_items:
            raise ValueError("--full-softmax trains the item side; --frozen-items keeps it (and is a full softmax)")
        if self.positives > 1 and not (self.full_softmax or self.frozen_items):
            raise ValueError("--positives > 1 needs --full-softmax or --frozen-items")
        if self.popularity_prior < 0 or (self.popularity_prior and not self.frozen_items):
            raise ValueError("--popularity-prior must be >= 0 and needs --frozen-items")
        if min(self.lora_top_layers, self.warmup_steps, self.cache_window, self.uniform_negatives) < 0:
            raise ValueError("--lora-top-layers, --warmup-steps, --cache-window and --uniform-negatives must be >= 0")

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-cl-seed{self.seed}"

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where or how often it is saved)."""
        skip = {"out_dir", "checkpoint_minutes", "gradient_checkpointing"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in skip}


@dataclass
class _Progress:
    """What `resume.pt` carries besides tensors."""

    step: int = 0
    seconds: float = 0.0
    best_ndcg: float = -1.0
    best_step: int = 0
    curve: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    fresh_row_biases: list[float | None] = field(default_factory=list)


class _CacheRanker:
    """Validation ranker: `direct` user vectors (encoded once per validation) scored against the negative cache
    (centered cosine), plus `prior_weight` x log(1 + training count) of each item (the popularity prior whose
    value the validation reports; 0 = none)."""

    name = "cl-validation"
    batch_size = 64

    def __init__(self, users: dict[str, torch.Tensor], cache: NegativeCache, log_counts: torch.Tensor,
                 prior_weight: float = 0.0) -> None:
        self.users, self.cache, self.prior = users, cache, prior_weight * log_counts

    def scores(self, examples: list[Example]) -> np.ndarray:
        users = torch.stack([self.users[e.user_id] for e in examples])
        scores = users @ self.cache.units.T + self.prior[None, :]
        return scores.masked_fill(~self.cache.filled[None, :], float("-inf")).numpy()


def train_contrastive(config: ContrastiveConfig, ds: Dataset | None = None) -> Path:
    """Train (or resume, or find done) the adapter; returns its folder."""
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model

    folder = config.adapter_dir
    if _steps_done(folder, config) >= config.steps:
        log.info("%s is already trained with these settings for %d steps", folder, config.steps)
        return folder
    ds = ds or load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    data = TrainingSamples(ds, split, config.recent_targets, config.batch_size)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(config.seed)
    loaded = load_model(config.model)
    base_fingerprint = loaded.fingerprint
    if config.gradient_checkpointing:
        loaded.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = loaded.model.config.num_hidden_layers
    top = config.lora_top_layers
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_modules),
                      layers_to_transform=list(range(layers - top, layers)) if 0 < top < layers else None)
    peft_model = get_peft_model(loaded.model, lora)
    peft_model.to(accelerator.device)
    engine = TransformersEngine(loaded, batch_size=config.item_batch_size)
    # with a sample pool, prompts pass the frozen layers once (trainer.layer_cache); the top layers run per use
    encoder = LowerLayerCache(engine, layers - top, folder / "lower-states") if config.sample_pool else engine
    pool = data.pool(config.sample_pool, config.batch_size, config.seed) if config.sample_pool else []
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (config.warmup_steps + 1)))
    resumed = _resume(folder, config, peft_model, optimizer, schedule)
    if resumed is None:
        # frozen items are encoded once, so their lower states would never be used again
        progress = _Progress()
        cache = _initial_cache(config, engine if config.frozen_items else encoder, peft_model, data, folder)
    else:
        progress, cache = resumed
    valid = sample_examples(validation_examples(split), config.valid_users, config.seed)
    log.info("contrastive LoRA on %s/%s: %d users, %d warm items, %d trainable parameters, step %d of %d",
             ds.name, split.protocol, len(data.users), len(data.warm_codes),
             sum(p.numel() for p in peft_model.parameters() if p.requires_grad), progress.step, config.steps)
    if progress.step == 0:  # the curve starts at the base model (LoRA B is zero at step 0)
        _validate(encoder, peft_model, data, cache, valid, progress, folder, config, ds, split, base_fingerprint)
    last_save = time.monotonic()
    bar = tqdm(total=config.steps, initial=progress.step, desc="contrastive LoRA", unit="step")
    while progress.step < config.steps:
        start = time.perf_counter()
        examples = (pool[data.pool_batch(progress.step, len(pool), config.seed)] if pool
                    else data.batch(progress.step, config.batch_size, config.seed))
        loss, bias = _train_step(encoder, peft_model, optimizer, schedule, accelerator, data, examples, cache, config,
                                 progress.step)
        progress.step += 1
        progress.seconds += time.perf_counter() - start
        progress.losses.append(loss)
        progress.fresh_row_biases.append(bias)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", samples_per_s=f"{progress.step * config.batch_size / progress.seconds:.2f}")
        if progress.step % config.valid_every == 0 or progress.step == config.steps:
            _validate(encoder, peft_model, data, cache, valid, progress, folder, config, ds, split, base_fingerprint)
        if time.monotonic() - last_save > 60 * config.checkpoint_minutes or progress.step == config.steps:
            _save_resume(folder, config, peft_model, optimizer, schedule, cache, progress)
            last_save = time.monotonic()
    bar.close()
    _write_meta(folder, config, ds, split, base_fingerprint, progress, "done")
    return folder


def _train_step(encoder: TransformersEngine | LowerLayerCache, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, accelerator,
                data: TrainingSamples, examples: list[Example], cache: NegativeCache, config: ContrastiveConfig,
                step: int) -> tuple[float, float | None]:
    """One optimizer step on `examples`; returns the loss and the cache's fresh-row bias seen by its users. Each
    (user, positive) pair is a row of the loss (`ContrastiveConfig.positives`): one row per user by default."""
    positives = [data.positives(e, config.positives) for e in examples]
    row_user = torch.tensor([i for i, codes in enumerate(positives) for _ in codes])
    codes = torch.tensor([c for user_codes in positives for c in user_codes])
    owned = history_mask([data.owned[e.user_id] for e in examples], len(data.item_ids))[row_user]
    model.train()
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")

    def encode(prompts: list[str]) -> torch.Tensor:
        with autocast:
            return encoder.answer_states(prompts).float().cpu()

    users = encode([data.user_prompt(e) for e in examples])[row_user]
    if config.frozen_items:
        prior = config.popularity_prior * torch.log1p(data.train_counts)
        loss = full_softmax_loss(users, codes, cache, owned, config.temperature, prior)
    elif config.full_softmax:
        logits = table_logits(users, codes, cache, owned, config.temperature)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        drawn, weights = draw_items(logits.detach().softmax(dim=-1), torch.as_tensor(data.warm_codes),
                                    config.item_draws, generator)
        items = encode([data.item_prompt(int(c)) for c in torch.cat([codes, drawn])])
        loss = (F.cross_entropy(logits, codes)
                + item_side_term(users, items[: len(codes)], items[len(codes) :], weights, cache, config.temperature))
    else:
        uniform = data.uniform_items(step, config.uniform_negatives, config.seed)
        columns = torch.cat([codes, uniform])
        items = encode([data.item_prompt(int(c)) for c in columns])
        window = config.cache_window
        cache_log_q = None
        if config.logq and window > 0:
            cache_log_q = log_drawn_in_window(data.log_q, config.batch_size, min(window, step - cache.refilled_at),
                                              len(uniform), len(data.warm_codes))
        loss = contrastive_loss(users, items, columns, cache, owned,
                                data.log_q_with_uniform(len(uniform)) if config.logq else None,
                                config.temperature, cache.negatives(step, window), cache_log_q)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    schedule.step()
    if config.frozen_items or config.full_softmax:  # the table holds one model's vectors until the next refill
        return float(loss.detach()), None
    bias = cache.fresh_row_bias(users)
    cache.update(columns, items, step + 1)
    return float(loss.detach()), bias


def _initial_cache(config: ContrastiveConfig, encoder: TransformersEngine | LowerLayerCache, model: torch.nn.Module,
                   data: TrainingSamples, folder: Path) -> NegativeCache:
    """The base model's item vectors: taken from its served index when there is one (`init_from_index`; its
    item prompts carry the index's rating statistics), else encoded here by `encoder` (in a sample-pool run its
    lower-layer states are then kept for every later re-encoding) from training-split item prompts with their
    mean as the center (batches cached on disk, so an interrupted start resumes)."""
    engine = encoder.engine if isinstance(encoder, LowerLayerCache) else encoder
    index_dir = default_index_dir(config.dataset, engine.fingerprint)
    if config.init_from_index and ItemStore.exists(index_dir):
        store = ItemStore.load(index_dir, expect=engine.fingerprint)
        center = store.center if store.center is not None else np.zeros(engine.hidden_size, dtype=np.float32)
        cache = NegativeCache.empty(len(data.item_ids), torch.tensor(center))
        codes = [c for c in data.warm_codes if store.get(data.item_ids[c]) is not None]
        cache.units[codes] = torch.as_tensor(store.vectors_of([data.item_ids[c] for c in codes]), dtype=torch.float32)
        cache.filled[codes] = True
        indexed = set(codes)
        missing = [c for c in data.warm_codes if c not in indexed]
        log.info("negative cache from the index %s (%d items; %d encoded here)", index_dir, len(codes), len(missing))
        if missing:
            cache.update(torch.tensor(missing), _encode(encoder, model, data, missing), step=0)
        return cache
    batches = BatchCache(folder / "base-items", {"items": engine.fingerprint.to_json()})
    cache = NegativeCache.empty(len(data.item_ids), torch.zeros(engine.hidden_size))
    cache.refill(torch.tensor(data.warm_codes), _encode(encoder, model, data, data.warm_codes, batches), step=0)
    return cache


def _encode(encoder: TransformersEngine | LowerLayerCache, model: torch.nn.Module, data: TrainingSamples,
            codes: list[int], batches: BatchCache | None = None) -> torch.Tensor:
    """Raw vectors of the items `codes` (item prompts from training statistics) with the current model."""
    model.eval()
    items = [data.items[data.item_ids[c]] for c in codes]
    return torch.as_tensor(encode_items(items, encoder, batches or BatchCache(None, {}), encoder.batch_size,
                                        "encoding items for the negative cache"))


def validation_examples(split: Split) -> list[Example]:
    """The examples the curve validates on. With held-out items only the warm ones: the table holds the training
    items alone, so a cold target could never be ranked and would only add zeros (about half of the examples)."""
    return split.valid_warm if isinstance(split, ColdSplit) else split.valid


def _validate(encoder: TransformersEngine | LowerLayerCache, model: torch.nn.Module, data: TrainingSamples,
              cache: NegativeCache, valid: list[Example], progress: _Progress, folder: Path, config: ContrastiveConfig,
              ds: Dataset, split: Split, base_fingerprint) -> None:
    started = time.perf_counter()
    if progress.step > 0 and not config.frozen_items:  # step 0: the cache already holds the base model's vectors
        cache.refill(torch.tensor(data.warm_codes), _encode(encoder, model, data, data.warm_codes),
                     progress.step)
    model.eval()
    texts = [data.user_prompt(e) for e in valid]
    vectors = cache.unit(torch.cat([torch.as_tensor(encoder.embed_direct(texts[first : first + encoder.batch_size]))
                                    for first in tqdm(range(0, len(texts), encoder.batch_size), unit="batch",
                                                      desc="encoding validation users")]))
    users = {e.user_id: vector for e, vector in zip(valid, vectors, strict=True)}
    counts = data.train_counts.numpy()
    log_counts = torch.log1p(data.train_counts)
    result = rank_examples(_CacheRanker(users, cache, log_counts, config.popularity_prior), valid, data.item_ids,
                           keep_top=10, desc="validating")
    metrics = mean_metrics(result.per_query())
    with_prior = [{"weight": weight, **mean_metrics(rank_examples(_CacheRanker(users, cache, log_counts, weight), valid,
                                                                  data.item_ids, desc=f"prior {weight}").per_query())}
                  for weight in PRIOR_WEIGHTS]
    popularity = popularity_ranks(counts)
    recommended = [data.code[item_id] for top in result.top for item_id, _ in top]
    previous = progress.curve[-1]["step"] if progress.curve else 0
    recent = progress.losses[previous:]
    biases = [b for b in progress.fresh_row_biases[previous:] if b is not None]
    point = {"step": progress.step, "seconds": round(progress.seconds, 1),
             "loss": float(np.mean(recent)) if recent else None,
             "fresh_row_bias": float(np.mean(biases)) if biases else None,
             "validation_seconds": round(time.perf_counter() - started, 1),
             "NDCG@10": metrics["NDCG@10"], "HR@10": metrics["HR@10"],
             "top10_median_popularity_rank": float(np.median(popularity[recommended])),
             "target_median_popularity_rank": float(np.median(popularity[[data.code[e.target.item_id] for e in valid]])),
             "top10_distinct_items": len(set(recommended)),
             "best_popularity_prior": {k: v for k, v in max(with_prior, key=lambda m: m["NDCG@10"]).items()
                                       if k in ("weight", "NDCG@10", "HR@10")},
             "samples_per_s": progress.step * config.batch_size / max(progress.seconds, 1e-9),
             "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    progress.curve.append(point)
    tqdm.write(f"step {progress.step}: loss {point['loss'] or float('nan'):.4f}, valid NDCG@10 {point['NDCG@10']:.4f} "
               f"HR@10 {point['HR@10']:.4f} ({len(valid)} users), {point['samples_per_s']:.2f} samples/s, "
               f"fresh-row bias {point['fresh_row_bias'] or 0:.3f}, top-10 median popularity rank "
               f"{point['top10_median_popularity_rank']:.0f} (targets {point['target_median_popularity_rank']:.0f}); "
               f"with the best popularity prior ({point['best_popularity_prior']['weight']}) NDCG@10 "
               f"{point['best_popularity_prior']['NDCG@10']:.4f} HR@10 {point['best_popularity_prior']['HR@10']:.4f}")
    if metrics["NDCG@10"] > progress.best_ndcg:
        progress.best_ndcg, progress.best_step = metrics["NDCG@10"], progress.step
        model.save_pretrained(folder)
        _write_meta(folder, config, ds, split, base_fingerprint, progress, "training")


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """(len(counts),) each item's rank in the order of the `popular` ranker, from its counts
    (`PopularityRanker.row`): by number of training interactions, 1 = most popular, ties by position."""
    ranks = np.empty(len(counts), dtype=np.int64)
    ranks[np.argsort(-counts, kind="stable")] = np.arange(1, len(counts) + 1)
    return ranks


def _write_meta(folder: Path, config: ContrastiveConfig, ds: Dataset, split: Split, base_fingerprint,
                progress: _Progress, status: str) -> None:
    best = next((p for p in progress.curve if p["step"] == progress.best_step), {})
    meta = {
        "status": status, "method": f"contrastive LoRA {describe_recipe(config.fingerprint())}; history masked",
        "base_model": base_fingerprint.to_json(), "template_version": base_fingerprint.template_version,
        "rating_template_version": RATING_TEMPLATE_VERSION, "config": config.fingerprint(),
        "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                 "interactions": ds.n_interactions},
        "split": {"protocol": split.protocol, "valid_examples": len(split.valid), "test_examples": len(split.test)},
        "steps": progress.step, "best_step": progress.best_step, "train_seconds": round(progress.seconds, 1),
        "metrics": {"valid_best": best}, "curve": progress.curve,
        "machine": machine_line(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (ADAPTER_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    tmp.replace(folder / ADAPTER_META)


_ADDED_SETTINGS = {"frozen_items": False, "popularity_prior": 0.0, "sample_pool": 0, "full_softmax": False,
                   "item_draws": 32, "positives": 1}
"""Settings added after runs were made; such a run had their default."""


def describe_recipe(config: dict) -> str:
    """The run's loss and negatives in words, from its stored settings (`ContrastiveConfig.fingerprint`; settings
    a run predates take their default): the adapter metadata's `method` and the training report's recipe."""
    config = {**_ADDED_SETTINGS, **config}
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
                f"the batch's softmax, importance-weighted{_positives(config)}{_pool(config)}")
    return (f"on user and item prompts: in-batch softmax, logQ {'on' if config['logq'] else 'off'}; the item cache is "
            f"re-encoded and re-centered at every validation (every {config['valid_every']} steps) and overwritten "
            "with each batch's targets in between; its negatives "
            + (f"are the rows written by the last {config['cache_window']} steps" if config['cache_window']
               else "are all its rows")
            + (f", plus {config['uniform_negatives']} items drawn uniformly per step (in-batch columns with "
               "gradients, then written into it)" if config['uniform_negatives'] else "") + _pool(config))


def _positives(config: dict) -> str:
    return (f"; each sample's target and the next {config['positives'] - 1} items of the user's training sequence are "
            "positives, each its own softmax term" if config["positives"] > 1 else "")


def _pool(config: dict) -> str:
    return (f"; the steps cycle through a fixed pool of {config['sample_pool']} samples, every prompt's states below "
            "the LoRA layers computed once" if config["sample_pool"] else "")


def _steps_done(folder: Path, config: ContrastiveConfig) -> int:
    """Steps of the finished run in `folder` (0: none or unfinished); an error if it has other settings."""
    path = folder / ADAPTER_META
    if not path.is_file():
        return 0
    meta = json.loads(path.read_text(encoding="utf-8"))
    _check_same_config(folder, meta.get("config", {}), config)
    return int(meta["steps"]) if meta.get("status") == "done" else 0


def _check_same_config(folder: Path, stored: dict, config: ContrastiveConfig) -> None:
    # a finished run can be continued with a larger --steps: the learning rate is constant after warm-up
    check_same_run(folder, {**_ADDED_SETTINGS, **stored}, config.fingerprint(), "contrastive", ignore=("steps",))


def _resume(folder: Path, config: ContrastiveConfig, model, optimizer, schedule
            ) -> tuple[_Progress, NegativeCache] | None:
    from peft import set_peft_model_state_dict

    path = folder / RESUME_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    _check_same_config(folder, saved["config"], config)
    set_peft_model_state_dict(model, saved["lora"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    cache = NegativeCache(saved["cache_units"], saved["cache_filled"], saved["cache_center"], saved["cache_written_at"],
                          int(saved["cache_refilled_at"]))
    torch.set_rng_state(saved["torch_rng"])
    progress = _Progress(**json.loads(saved["progress"]))
    log.info("resuming %s after step %d", folder, progress.step)
    return progress, cache


def _save_resume(folder: Path, config: ContrastiveConfig, model, optimizer, schedule, cache: NegativeCache,
                 progress: _Progress) -> None:
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (RESUME_FILE + ".tmp")
    torch.save({"config": config.fingerprint(), "lora": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "cache_units": cache.units,
                "cache_filled": cache.filled, "cache_center": cache.center, "cache_written_at": cache.written_at,
                "cache_refilled_at": cache.refilled_at,
                "torch_rng": torch.get_rng_state(),
                "progress": json.dumps(asdict(progress))}, tmp)
    tmp.replace(folder / RESUME_FILE)
