"""Reasoning SFT (`reasonrec train-reasoning`): teach the language model to write a short grounded analysis of a
history and then `<answer>` itself, from rationales a program writes (`trainer.reasoning.rationales`), so the
`reasoning` ranker's state is read after reasoning the model finished rather than one the budget cut (issue 27;
the reasoning-then-state format of R2ec, "Towards Large Recommender Models with Reasoning", with LoRA, Hu et al.,
ICLR 2022, instead of a teacher model or RL, neither of which fits this offline 2-core machine).

Samples: [user: user prompt][assistant: rationale + `<answer>`], loss on the assistant tokens only, from a fixed
seeded pool of training-split windows (`trainer.reasoning.samples`), several cuts of one window teacher-forced in
one forward (`trainer.reasoning.packing`). LoRA on the top `lora_top_layers` decoder layers: the layers below run
without autograd records. Steps cycle through the pool in a seeded order per epoch; the learning rate warms up,
then decays linearly to `lr_floor` x lr. `resume.pt` (LoRA weights, optimizer, schedule, progress) and the adapter
are written every `checkpoint_minutes`; rerunning the same command resumes and is a no-op once done. At the end a
few validation users get a greedy reasoning with the served budget (marker rate, faithfulness: `check_users`) and
the adapter folder gets `reasonrec-adapter.json` (`model.engines.loading.ADAPTER_META`: base model fingerprint, template
version, data, split, steps, settings), so `load_model(name, adapter)` serves it and its hash enters every cache
key and index folder. Devices come from accelerate: the same command runs on a GPU.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from indexer.core.durable import replace_text
from indexer.core.paths import artifacts_dir
from model.engines.loading import ADAPTER_META, LoadedModel, load_model
from trainer.data.protocols import SplitConfig, check_same_run
from trainer.data.splits import sample_examples
from trainer.machine import machine_line
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.packing import PackedRow, WindowSample, pack_window, packed_loss
from trainer.reasoning.rationales import MAX_RATIONALE_TOKENS, token_counter
from trainer.reasoning.samples import window_pool
from trainer.reasoning.scoring import score_reasonings
from trainer.train.lora import LoraSettings, add_lora, save_adapter

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


@dataclass
class ReasoningSftConfig(SplitConfig, LoraSettings):
    """What `reasonrec train-reasoning` trains; the defaults are sized for about an hour on a shared 2-core CPU with
    `--threads 1` (about 1 sample/s: one torch thread beats two when other jobs share the cores); the LoRA settings
    are `trainer.train.lora.LoraSettings`', with these defaults."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_top_layers: int = 8
    windows: int = 320
    """History windows in the training pool (one per user, seeded)."""
    cuts: int = 8
    """Cut points per window, each one sample (the whole window always among them)."""
    min_lines: int = 8
    """Fewest history lines a cut shows."""
    recent: int = 50
    """A window ends among its user's N most recent training interactions."""
    max_rationale_tokens: int = MAX_RATIONALE_TOKENS
    """Token budget of a rationale including `<answer>` (optional parts are dropped to fit)."""
    windows_per_step: int = 2
    """Windows per optimizer step (each with all its cuts)."""
    epochs: int = 1
    """Passes over the pool; steps = ceil(windows / windows_per_step) x epochs. Raise and rerun to continue."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    lr_floor: float = 0.1
    """The learning rate decays linearly from lr to lr x lr_floor at the last step."""
    warmup_steps: int = 5
    """Steps of linear learning-rate warm-up."""
    check_users: int = 16
    """Seeded validation users given a greedy reasoning at the end (marker rate, faithfulness); 0 = none."""
    check_tokens: int = 48
    """Token budget of those reasonings (the served default)."""
    checkpoint_minutes: float = 5.0
    """Minutes between writes of `resume.pt` and the adapter (at most)."""
    mixed_precision: str = "no"
    """"bf16" runs forward and backward under bfloat16 autocast (GPUs); "no" keeps float32."""
    seed: int = 0
    """Seed of LoRA initialization, the pool, the phrasings, the step order and the check users."""
    out_dir: Path | None = None
    """Adapter folder; default `artifacts/adapters/<dataset>-<protocol>-reasoning-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        super().__post_init__()
        self.check_lora()
        positive = {"windows": self.windows, "cuts": self.cuts, "min_lines": self.min_lines,
                    "recent": self.recent, "windows_per_step": self.windows_per_step, "epochs": self.epochs,
                    "max_rationale_tokens": self.max_rationale_tokens, "check_tokens": self.check_tokens}
        bad = [name for name, value in positive.items() if value < 1]
        if bad:
            raise ValueError(f"--{bad[0].replace('_', '-')} must be >= 1")
        if self.min_lines > 20:
            raise ValueError("--min-lines must be <= 20 (a prompt shows at most 20 lines)")
        if self.lr <= 0 or self.checkpoint_minutes <= 0 or not 0 <= self.lr_floor <= 1:
            raise ValueError("--lr and --checkpoint-minutes must be positive, --lr-floor in [0, 1]")
        if self.warmup_steps < 0 or self.check_users < 0:
            raise ValueError("--warmup-steps and --check-users must be >= 0")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")

    @property
    def steps(self) -> int:
        return -(-self.windows // self.windows_per_step) * self.epochs

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` at optimizer step `step` (0-based): linear warm-up, then linear decay to lr_floor."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.steps - self.warmup_steps - 1)
        return 1.0 - (1.0 - self.lr_floor) * min(1.0, (step - self.warmup_steps) / span)

    @property
    def adapter_dir(self) -> Path:
        name = f"{self.dataset}-{self.protocol}-reasoning-seed{self.seed}"
        return self.out_dir or artifacts_dir() / "adapters" / name

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where or how often it is saved, nor the final check)."""
        skip = {"out_dir", "checkpoint_minutes", "check_users", "check_tokens"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in skip}


@dataclass
class _Progress:
    step: int = 0
    seconds: float = 0.0
    samples: int = 0
    losses: list[float] = field(default_factory=list)


def seeded_lora(model: torch.nn.Module, config: ReasoningSftConfig) -> torch.nn.Module:
    """`model` wrapped by peft with the config's LoRA (seeded initialization)."""
    torch.manual_seed(config.seed)
    return add_lora(model, config)


def train_packed(model: torch.nn.Module, rows: list[PackedRow], steps: int, lr: float, pad_id: int,
                 rows_per_step: int = 1) -> list[float]:
    """A plain loop (constant lr, rows in order, cycled) over packed rows: the fixed-rationale tests' trainer."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for step in range(steps):
        first = step * rows_per_step % len(rows)
        loss, _ = packed_loss(model, (rows + rows)[first : first + rows_per_step], pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def train_reasoning(config: ReasoningSftConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the reasoning adapter; returns its folder (`command` is recorded)."""
    from accelerate import Accelerator

    folder = config.adapter_dir
    if _done(folder, config):
        log.info("%s is already trained with these settings", folder)
        return folder
    ds, split = config.load()
    context = ReasoningContext(ds.catalog)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loaded = load_model(config.model)
    base_fingerprint, tokenizer = loaded.fingerprint, loaded.tokenizer
    model = seeded_lora(loaded.model, config).to(accelerator.device)
    started = time.perf_counter()
    pool = window_pool(ds, split, context, config.windows, config.cuts, config.min_lines, config.recent, config.seed,
                       token_counter(tokenizer), config.max_rationale_tokens)
    rows = [pack_window(tokenizer, sample) for sample in tqdm(pool, desc="packing windows", unit="window")]
    stats = _pool_stats(pool, rows, tokenizer, time.perf_counter() - started)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    progress = _resume(folder, config, model, optimizer, schedule) or _Progress()
    log.info("reasoning SFT on %s/%s: %d windows, %d samples (%s), %d trainable parameters, step %d of %d",
             ds.name, split.protocol, len(pool), stats["samples"], stats,
             sum(p.numel() for p in model.parameters() if p.requires_grad), progress.step, config.steps)
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")
    last_save = time.monotonic()
    bar = tqdm(total=config.steps, initial=progress.step, desc="reasoning SFT", unit="step")
    while progress.step < config.steps:
        start = time.perf_counter()
        batch = [rows[i] for i in _step_rows(progress.step, len(rows), config.windows_per_step, config.seed)]
        model.train()
        with autocast:
            loss, _ = packed_loss(model, batch, tokenizer.pad_token_id)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        progress.step += 1
        progress.seconds += time.perf_counter() - start
        progress.samples += sum(len(row.tails) for row in batch)
        progress.losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{progress.losses[-1]:.3f}", samples_per_s=f"{progress.samples / progress.seconds:.2f}")
        if time.monotonic() - last_save > 60 * config.checkpoint_minutes or progress.step == config.steps:
            _save(folder, config, command, model, optimizer, schedule, progress, "training", base_fingerprint, ds,
                  split, context, stats)
            last_save = time.monotonic()
    bar.close()
    model.eval()
    check = _final_check(model, loaded, split, context, config)
    _save(folder, config, command, model, optimizer, schedule, progress, "done", base_fingerprint, ds, split, context,
          stats, check)
    return folder


def _step_rows(step: int, n: int, per_step: int, seed: int) -> list[int]:
    """The pool rows of step `step`: each epoch a seeded permutation of the pool, cut into steps."""
    steps_per_epoch = -(-n // per_step)
    order = np.random.default_rng([seed, step // steps_per_epoch, 5]).permutation(n)
    first = step % steps_per_epoch * per_step
    return order[first : first + per_step].tolist()


def _pool_stats(pool: list[WindowSample], rows: list[PackedRow], tokenizer: Any, seconds: float) -> dict:
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for s in pool for t in s.texts]
    return {"windows": len(pool), "samples": sum(len(r.tails) for r in rows),
            "skipped_cuts": sum(r.skipped for r in rows), "rationale_tokens_mean": round(float(np.mean(lengths)), 1),
            "rationale_tokens_max": int(max(lengths)), "row_tokens_mean": round(float(np.mean(
                [len(r.ids) for r in rows])), 1), "build_seconds": round(seconds, 1)}


def _final_check(model: Any, loaded: LoadedModel, split: Any, context: ReasoningContext,
                 config: ReasoningSftConfig) -> dict:
    """Greedy reasoning of `check_users` seeded validation users with the trained model (LoRA not merged)."""
    if config.check_users == 0:
        return {}
    from model.engines.transformers_engine import TransformersEngine

    examples = sample_examples(split.valid, config.check_users, config.seed)
    engine = TransformersEngine(LoadedModel(model.get_base_model(), loaded.tokenizer, loaded.fingerprint),
                                batch_size=8)
    return score_reasonings(engine, examples, context, config.check_tokens, "checking validation users").summary()


def _done(folder: Path, config: ReasoningSftConfig) -> bool:
    """Whether `folder` holds a finished run of these settings with at least `config.steps` steps."""
    path = folder / ADAPTER_META
    if not path.is_file():
        return False
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_same_run(folder, meta.get("config", {}), config.fingerprint(), "reasoning SFT", ignore=("epochs",))
    return meta.get("status") == "done" and int(meta.get("steps", 0)) >= config.steps


def _resume(folder: Path, config: ReasoningSftConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler) -> _Progress | None:
    from peft import set_peft_model_state_dict

    path = folder / RESUME_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    check_same_run(folder, saved["config"], config.fingerprint(), "reasoning SFT", ignore=("epochs",))
    set_peft_model_state_dict(model, saved["lora"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    progress = _Progress(**json.loads(saved["progress"]))
    log.info("resuming %s after step %d", folder, progress.step)
    return progress


def _save(folder: Path, config: ReasoningSftConfig, command: str, model: Any, optimizer: torch.optim.Optimizer,
          schedule: torch.optim.lr_scheduler.LRScheduler, progress: _Progress, status: str, base_fingerprint: Any,
          ds: Any, split: Any, context: ReasoningContext, stats: dict, check: dict | None = None) -> None:
    """The adapter, its metadata and (while training) `resume.pt`, each written to a temporary name first."""
    from peft import get_peft_model_state_dict

    save_adapter(model, folder, base_fingerprint.model_id)
    if status != "done":
        tmp = folder / (RESUME_FILE + ".tmp")
        torch.save({"config": config.fingerprint(), "lora": get_peft_model_state_dict(model),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "progress": json.dumps(asdict(progress))}, tmp)
        tmp.replace(folder / RESUME_FILE)
    recent = progress.losses[-10:]
    meta = {
        "status": status, "job": "reasoning-sft", "command": command,
        "method": "reasoning SFT: LoRA on [user prompt][program-written grounded rationale + <answer>], loss on the "
                  "assistant tokens only (trainer.reasoning)",
        "base_model": base_fingerprint.to_json(), "template_version": base_fingerprint.template_version,
        "config": config.fingerprint(),
        "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                 "interactions": ds.n_interactions},
        "split": {"protocol": split.protocol, "valid_examples": len(split.valid), "test_examples": len(split.test)},
        "pool": stats, "steps": progress.step, "samples_seen": progress.samples,
        "train_seconds": round(progress.seconds, 1), "loss_last10": float(np.mean(recent)) if recent else None,
        "losses": [round(x, 4) for x in progress.losses], "final_check": check or {},
        "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    replace_text(folder / ADAPTER_META, json.dumps(meta, indent=1))
