"""The contrastive LoRA training job (`reasonrec train-cl`, `make train-cl`): teach the LLM to put a user's
`direct` vector next to the vector of the item they take next (docs/design.md section 5, CL), with a LoRA adapter (Hu
et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) trained on a full softmax over every item
(`trainer.train.contrastive.loss`; samples from `trainer.train.contrastive.samples`, settings in
`trainer.train.contrastive.config`).

Step 0 fills the item table with the base model's item vectors: from its served index when `reasonrec index` has
built one (then the index's center is the training center too), else by encoding every training item (cached on
disk per batch, so an interrupted start resumes). Each step scores the batch's users against the whole table and
trains the item side through fresh vectors of the targets and of `item_draws` drawn items. Validation (every
`valid_every` steps) first re-encodes every item with the current model and re-centers the table on their mean,
as the adapter's served index will be, then ranks a seeded sample of validation users against it with history
excluded (also with the popularity prior of `indexer.prior` at each weight of
`indexer.prior.PRIOR_WEIGHTS`, reporting the best) and keeps the best adapter by plain NDCG@10 in the
output folder, with `reasonrec-adapter.json` (base model, templates, data, split, steps, metrics, curve). With
`sample_pool` the steps cycle through a fixed pool of samples and every prompt passes the frozen layers below the
LoRA layers once (`trainer.train.contrastive.layer_cache`), so steps, validations and re-encodings run the top
layers only.
`resume.pt` (LoRA weights, optimizer, table, progress) is written every `checkpoint_minutes`; rerunning the same
command resumes, is a no-op once the run is done, continues a finished run when `steps` is raised, and ends an
interrupted run when `steps` is lowered. Devices come from accelerate: the same command runs on a CPU or a GPU.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from indexer.core.durable import replace_text
from indexer.core.paths import index_dir_for
from indexer.prior import PRIOR_WEIGHTS
from indexer.store import ItemStore
from model.engines.loading import ADAPTER_META, load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import RATING_TEMPLATE_VERSION
from trainer.batch_cache import BatchCache, item_states
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import check_same_run, make_split
from trainer.data.splits import ColdSplit, Example, Split, sample_examples
from trainer.machine import machine_line
from trainer.protocol.harness import rank_examples
from trainer.protocol.metrics import mean_metrics
from trainer.train.contrastive.config import ContrastiveConfig, describe_recipe
from trainer.train.contrastive.layer_cache import LowerLayerCache
from trainer.train.contrastive.loss import ItemTable, draw_items, history_mask, item_side_term, table_logits
from trainer.train.contrastive.samples import TrainingSamples
from trainer.train.lora import add_lora

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"
Encoder = TransformersEngine | LowerLayerCache


@dataclass
class _Progress:
    """What `resume.pt` carries besides tensors."""

    step: int = 0
    seconds: float = 0.0
    best_ndcg: float = -1.0
    best_step: int = 0
    curve: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


class _TableRanker:
    """Validation ranker (`trainer.protocol.harness.EvalRanker`): `direct` user vectors (encoded once per
    validation) scored against the item table (centered cosine), plus `prior_weight` x log(1 + training count) of
    each item (the popularity prior whose value the validation reports; 0 = none)."""

    name = "cl-validation"
    batch_size = 64

    def __init__(self, users: dict[str, torch.Tensor], table: ItemTable, log_counts: torch.Tensor,
                 prior_weight: float = 0.0) -> None:
        self.users, self.table, self.prior = users, table, prior_weight * log_counts

    def scores(self, examples: list[Example]) -> np.ndarray:
        users = torch.stack([self.users[e.user_id] for e in examples])
        scores = users @ self.table.units.T + self.prior[None, :]
        return scores.masked_fill(~self.table.filled[None, :], float("-inf")).numpy()


def train_contrastive(config: ContrastiveConfig, ds: Dataset | None = None) -> Path:
    """Train (or resume, or find done) the adapter; returns its folder."""
    from accelerate import Accelerator

    folder = config.adapter_dir
    if _steps_done(folder, config) >= config.steps:
        log.info("%s is already trained with these settings for %d steps", folder, config.steps)
        return folder
    ds = ds or load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    data = TrainingSamples(ds, split, config.recent_targets)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(config.seed)
    loaded = load_model(config.model)
    base_fingerprint = loaded.fingerprint
    if config.gradient_checkpointing:
        loaded.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = loaded.model.config.num_hidden_layers
    top = config.lora_top_layers
    peft_model = add_lora(loaded.model, config)
    peft_model.to(accelerator.device)
    engine = TransformersEngine(loaded, batch_size=config.item_batch_size)
    # with a sample pool, prompts pass the frozen layers once; the top layers run per use
    encoder = LowerLayerCache(engine, layers - top, folder / "lower-states") if config.sample_pool else engine
    pool = data.pool(config.sample_pool, config.batch_size, config.seed) if config.sample_pool else []
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_factor(step))
    resumed = _resume(folder, config, peft_model, optimizer, schedule)
    if resumed is None:
        progress, table = _Progress(), _initial_table(config, encoder, peft_model, data, folder)
    else:
        progress, table = resumed
    valid = sample_examples(validation_examples(split), config.valid_users, config.seed)
    log.info("contrastive LoRA on %s/%s: %d users, %d warm items, %d trainable parameters, step %d of %d",
             ds.name, split.protocol, len(data.users), len(data.warm_codes),
             sum(p.numel() for p in peft_model.parameters() if p.requires_grad), progress.step, config.steps)
    if progress.step == 0:  # the curve starts at the base model (LoRA B is zero at step 0)
        _validate(encoder, peft_model, data, table, valid, progress, folder, config, ds, split, base_fingerprint)
    last_save = time.monotonic()
    bar = tqdm(total=config.steps, initial=progress.step, desc="contrastive LoRA", unit="step")
    while progress.step < config.steps:
        start = time.perf_counter()
        examples = (pool[data.pool_batch(progress.step, len(pool), config.seed)] if pool
                    else data.batch(progress.step, config.batch_size, config.seed))
        loss = _train_step(encoder, peft_model, optimizer, schedule, accelerator, data, examples, table, config,
                           progress.step)
        progress.step += 1
        progress.seconds += time.perf_counter() - start
        progress.losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", samples_per_s=f"{progress.step * config.batch_size / progress.seconds:.2f}")
        if progress.step % config.valid_every == 0 or progress.step == config.steps:
            _validate(encoder, peft_model, data, table, valid, progress, folder, config, ds, split, base_fingerprint)
        if time.monotonic() - last_save > 60 * config.checkpoint_minutes or progress.step == config.steps:
            _save_resume(folder, config, peft_model, optimizer, schedule, table, progress)
            last_save = time.monotonic()
    bar.close()
    _write_meta(folder, config, ds, split, base_fingerprint, progress, "done")
    return folder


def _train_step(encoder: Encoder, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, accelerator: Any, data: TrainingSamples,
                examples: list[Example], table: ItemTable, config: ContrastiveConfig, step: int) -> float:
    """One optimizer step on `examples` (training step `step`, 0-based); returns the loss. The table is left
    alone: it holds one model's vectors until the next validation re-encodes it."""
    codes = torch.tensor([data.code[e.target.item_id] for e in examples])
    owned = history_mask([data.owned[e.user_id] for e in examples], len(data.item_ids))
    model.train()
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")

    def encode(prompts: list[str]) -> torch.Tensor:
        with autocast:
            return encoder.answer_states(prompts).float().cpu()

    users = encode([data.user_prompt(e) for e in examples])
    logits = table_logits(users, codes, table, owned, config.temperature)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    drawn, weights = draw_items(logits.detach().softmax(dim=-1), torch.as_tensor(data.warm_codes),
                                config.item_draws, generator)
    targets, drawn_items = encode(data.item_prompts(torch.cat([codes, drawn]))).split([len(codes), len(drawn)])
    loss = F.cross_entropy(logits, codes) + item_side_term(users, targets, drawn_items, weights, table,
                                                           config.temperature)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    schedule.step()
    return float(loss.detach())


def _initial_table(config: ContrastiveConfig, encoder: Encoder, model: torch.nn.Module, data: TrainingSamples,
                   folder: Path) -> ItemTable:
    """The base model's item vectors: taken from its served index when there is one (`init_from_index`; its
    item prompts carry the index's rating statistics), else encoded here by `encoder` (in a sample-pool run its
    lower-layer states are then kept for every later re-encoding) from training-split item prompts with their
    mean as the center (batches cached on disk, so an interrupted start resumes)."""
    engine = encoder.engine if isinstance(encoder, LowerLayerCache) else encoder
    index_dir = index_dir_for(config.dataset, engine.fingerprint)
    if config.init_from_index and ItemStore.exists(index_dir):
        store = ItemStore.load(index_dir, expect=engine.fingerprint)
        center = store.center if store.center is not None else np.zeros(engine.hidden_size, dtype=np.float32)
        table = ItemTable.empty(len(data.item_ids), torch.tensor(center))
        codes = [c for c in data.warm_codes if store.get(data.item_ids[c]) is not None]
        table.units[codes] = torch.as_tensor(store.vectors_of([data.item_ids[c] for c in codes]), dtype=torch.float32)
        table.filled[codes] = True
        indexed = set(codes)
        missing = [c for c in data.warm_codes if c not in indexed]
        log.info("item table from the index %s (%d items; %d encoded here)", index_dir, len(codes), len(missing))
        if missing:
            table.update(torch.tensor(missing), _encode(encoder, model, data, missing))
        return table
    batches = BatchCache(folder / "base-items", {"items": engine.fingerprint.to_json()})
    table = ItemTable.empty(len(data.item_ids), torch.zeros(engine.hidden_size))
    table.refill(torch.tensor(data.warm_codes), _encode(encoder, model, data, data.warm_codes, batches))
    return table


def _encode(encoder: Encoder, model: torch.nn.Module, data: TrainingSamples, codes: list[int],
            batches: BatchCache | None = None) -> torch.Tensor:
    """Raw vectors of the items `codes` (item prompts from training statistics) with the current model."""
    model.eval()
    items = [data.items[data.item_ids[c]] for c in codes]
    return torch.as_tensor(item_states(items, encoder, batches or BatchCache(None, {}), encoder.batch_size,
                                        "encoding the item table"))


def validation_examples(split: Split) -> list[Example]:
    """The examples the curve validates on. With held-out items only the warm ones: the table holds the training
    items alone, so a cold target could never be ranked and would only add zeros (about half of the examples)."""
    return split.valid_warm if isinstance(split, ColdSplit) else split.valid


def _validate(encoder: Encoder, model: torch.nn.Module, data: TrainingSamples, table: ItemTable,
              valid: list[Example], progress: _Progress, folder: Path, config: ContrastiveConfig, ds: Dataset,
              split: Split, base_fingerprint: Any) -> None:
    started = time.perf_counter()
    if progress.step > 0:  # step 0: the table already holds the base model's vectors
        table.refill(torch.tensor(data.warm_codes), _encode(encoder, model, data, data.warm_codes))
    model.eval()
    texts = [data.user_prompt(e) for e in valid]
    vectors = table.unit(torch.cat([torch.as_tensor(encoder.embed_direct(texts[first : first + encoder.batch_size]))
                                    for first in tqdm(range(0, len(texts), encoder.batch_size), unit="batch",
                                                      desc="encoding validation users")]))
    users = {e.user_id: vector for e, vector in zip(valid, vectors, strict=True)}
    log_counts = torch.log1p(data.train_counts)
    result = rank_examples(_TableRanker(users, table, log_counts), valid, data.item_ids, keep_top=10,
                           desc="validating")
    metrics = mean_metrics(result.per_query())
    with_prior = [{"weight": weight, **(metrics if weight == 0 else mean_metrics(
        rank_examples(_TableRanker(users, table, log_counts, weight), valid, data.item_ids,
                      desc=f"prior {weight}").per_query()))} for weight in PRIOR_WEIGHTS]
    popularity = popularity_ranks(data.train_counts.numpy())
    recommended = [data.code[item_id] for top in result.top for item_id, _ in top]
    targets = [data.code[e.target.item_id] for e in valid]
    previous = progress.curve[-1]["step"] if progress.curve else 0
    recent = progress.losses[previous:]
    point = {"step": progress.step, "seconds": round(progress.seconds, 1),
             "loss": float(np.mean(recent)) if recent else None,
             "validation_seconds": round(time.perf_counter() - started, 1),
             "NDCG@10": metrics["NDCG@10"], "HR@10": metrics["HR@10"],
             "top10_median_popularity_rank": float(np.median(popularity[recommended])),
             "target_median_popularity_rank": float(np.median(popularity[targets])),
             "top10_distinct_items": len(set(recommended)),
             "best_popularity_prior": {k: v for k, v in max(with_prior, key=lambda m: m["NDCG@10"]).items()
                                       if k in ("weight", "NDCG@10", "HR@10")},
             "samples_per_s": progress.step * config.batch_size / max(progress.seconds, 1e-9),
             "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    progress.curve.append(point)
    best_prior = point["best_popularity_prior"]
    tqdm.write(f"step {progress.step}: loss {point['loss'] or float('nan'):.4f}, valid NDCG@10 {point['NDCG@10']:.4f} "
               f"HR@10 {point['HR@10']:.4f} ({len(valid)} users), {point['samples_per_s']:.2f} samples/s, top-10 "
               f"median popularity rank {point['top10_median_popularity_rank']:.0f} (targets "
               f"{point['target_median_popularity_rank']:.0f}); with the best popularity prior ({best_prior['weight']})"
               f" NDCG@10 {best_prior['NDCG@10']:.4f} HR@10 {best_prior['HR@10']:.4f}")
    if metrics["NDCG@10"] > progress.best_ndcg:
        progress.best_ndcg, progress.best_step = metrics["NDCG@10"], progress.step
        model.save_pretrained(folder)
        _write_meta(folder, config, ds, split, base_fingerprint, progress, "training")


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """(len(counts),) each item's rank in the order of the `popular` ranker, from its training interaction counts:
    1 = most popular, ties by position."""
    ranks = np.empty(len(counts), dtype=np.int64)
    ranks[np.argsort(-counts, kind="stable")] = np.arange(1, len(counts) + 1)
    return ranks


def _write_meta(folder: Path, config: ContrastiveConfig, ds: Dataset, split: Split, base_fingerprint: Any,
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
    replace_text(folder / ADAPTER_META, json.dumps(meta, indent=1))


def _steps_done(folder: Path, config: ContrastiveConfig) -> int:
    """Steps of the finished run in `folder` (0: none or unfinished); an error if it has other settings."""
    path = folder / ADAPTER_META
    if not path.is_file():
        return 0
    meta = json.loads(path.read_text(encoding="utf-8"))
    _check_same_config(folder, meta.get("config", {}), config)
    return int(meta["steps"]) if meta.get("status") == "done" else 0


def _check_same_config(folder: Path, stored: dict, config: ContrastiveConfig) -> None:
    # the learning rate is constant after warm-up, so a run can be continued or ended with another --steps
    check_same_run(folder, stored, config.fingerprint(), "contrastive", ignore=("steps",))


def _resume(folder: Path, config: ContrastiveConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler) -> tuple[_Progress, ItemTable] | None:
    from peft import set_peft_model_state_dict

    path = folder / RESUME_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    _check_same_config(folder, saved["config"], config)
    set_peft_model_state_dict(model, saved["lora"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    table = ItemTable(saved["table_units"], saved["table_filled"], saved["table_center"])
    torch.set_rng_state(saved["torch_rng"])
    progress = _Progress(**json.loads(saved["progress"]))
    log.info("resuming %s after step %d", folder, progress.step)
    return progress, table


def _save_resume(folder: Path, config: ContrastiveConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, table: ItemTable, progress: _Progress) -> None:
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (RESUME_FILE + ".tmp")
    torch.save({"config": config.fingerprint(), "lora": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "table_units": table.units, "table_filled": table.filled, "table_center": table.center,
                "torch_rng": torch.get_rng_state(), "progress": json.dumps(asdict(progress))}, tmp)
    tmp.replace(folder / RESUME_FILE)
