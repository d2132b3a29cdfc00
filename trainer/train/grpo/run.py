"""What the GRPO jobs share: their settings and one run of TRL's `GRPOTrainer` (group-relative policy optimization,
Shao et al., "DeepSeekMath", 2024; the clipped ratio with eps_low 0.2 / eps_high 0.28 of DAPO, Yu et al., 2025, as
R2ec's RecPO uses it) on a LoRA adapter of the language model, resumable, with progress and the training curves.

The policy is a peft model. Started from an adapter (`--adapter`: the reasoning SFT's, or a rating SFT warm
start, RecZero's "RecOne"), that adapter is trained further and TRL keeps a frozen copy of it as the KL reference
(`beta`), so the KL term holds the policy near the SFT policy; started from the base model, a new LoRA
(`trainer.train.lora`) is trained and the reference is the base model. Rewards are callables TRL calls with the
completions and the prompt rows' columns (`example`: the row's index into the job's pool); TRL samples `group`
completions per prompt at `temperature`, normalizes each group's rewards into advantages, and steps.

Resumable: TRL (the Hugging Face `Trainer`) writes `checkpoints/checkpoint-N` every `checkpoint_steps` steps;
rerunning the same command resumes from the last one, and a finished run (`reasonrec-adapter.json` status "done"
with at least `steps` steps) is a no-op; a larger `--steps` continues. The adapter folder gets the trained adapter
alone and `reasonrec-adapter.json` (base model fingerprint, template version, data, settings, rewards and the
curves: TRL's log per step), so `load_model(name, reasoning_adapter=folder)` serves it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from indexer.core.durable import replace_text
from model.engines.loading import ADAPTER_META, LoadedModel
from trainer.data.protocols import check_same_run
from trainer.machine import machine_line
from trainer.train.lora import LoraSettings, add_lora, save_adapter

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
RUN_FILE = "grpo-run.json"
"""Beside the checkpoints: the settings of the run they belong to (a rerun with other settings is refused)."""

Reward = Callable[..., list[float]]
"""TRL's reward signature: (prompts, completions, example, **columns) -> one reward per completion."""


@dataclass
class GrpoSettings(LoraSettings):
    """The policy, the sampling and the update of a GRPO job (the LoRA fields apply without `adapter`)."""

    adapter: Path | None = None
    """Adapter the policy starts from (trained further; a frozen copy of it is the KL reference); none: a new LoRA
    on the base model."""
    users: int = 256
    """Prompts in the training pool (seeded)."""
    steps: int = 200
    """Optimizer steps. Raise and rerun to continue."""
    group: int = 4
    """Completions sampled per prompt (GRPO's group, G)."""
    prompts_per_step: int = 2
    """Prompts per optimizer step (each with its group)."""
    max_tokens: int = 48
    """Token budget of each completion."""
    temperature: float = 1.5
    """Sampling temperature of the completions."""
    top_k: int = 200
    """Sampling among the k most likely tokens (0 = all)."""
    lr: float = 1e-5
    """AdamW learning rate (constant after a 5% warm-up)."""
    beta: float = 0.04
    """Weight of the KL term to the reference policy (0 = none, as in R2ec)."""
    epsilon: float = 0.2
    """Lower clip of the probability ratio."""
    epsilon_high: float = 0.28
    """Upper clip of the probability ratio (clip-higher)."""
    checkpoint_steps: int = 10
    """Steps between resumable checkpoints."""
    mixed_precision: str = "no"
    """"bf16" trains under bfloat16 (GPUs); "no" keeps float32."""
    seed: int = 0
    """Seed of the pool, the sampling and a new LoRA's initialization."""
    out_dir: Path | None = None
    """Adapter folder; default under artifacts/adapters."""

    def check_grpo(self) -> None:
        """Errors that name the flag (call from the job config's `__post_init__`)."""
        self.check_lora()
        self.adapter = Path(self.adapter) if self.adapter is not None else None
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        if self.adapter is not None and not (self.adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter {self.adapter} is not a peft adapter folder (no adapter_config.json)")
        counts = {"users": self.users, "steps": self.steps, "prompts_per_step": self.prompts_per_step,
                  "max_tokens": self.max_tokens, "checkpoint_steps": self.checkpoint_steps}
        bad = [name for name, value in counts.items() if value < 1]
        if bad:
            raise ValueError(f"--{bad[0].replace('_', '-')} must be >= 1")
        if self.group < 2:
            raise ValueError("--group must be >= 2 (advantages compare the completions of one prompt)")
        if self.temperature <= 0 or self.lr <= 0 or self.beta < 0 or self.top_k < 0:
            raise ValueError("--temperature and --lr must be positive, --beta and --top-k >= 0")
        if not 0 < self.epsilon < 1 or self.epsilon_high < self.epsilon:
            raise ValueError("--epsilon must be in (0, 1) and --epsilon-high >= --epsilon")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the result (not where or how often it is saved)."""
        skip = {"out_dir", "checkpoint_steps"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in skip}


def finished(folder: Path, settings: GrpoSettings, job: str) -> bool:
    """Whether `folder` holds a finished run of these settings with at least `settings.steps` steps."""
    path = folder / ADAPTER_META
    if not path.is_file():
        return False
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_same_run(folder, meta.get("config", {}), settings.fingerprint(), job, ignore=("steps",))
    return meta.get("status") == "done" and int(meta.get("steps", 0)) >= settings.steps


def policy(loaded: LoadedModel, settings: GrpoSettings) -> torch.nn.Module:
    """The trainable peft model: the starting adapter, or a new seeded LoRA on the base model."""
    from peft import PeftModel

    if settings.adapter is not None:
        return PeftModel.from_pretrained(loaded.model, settings.adapter, is_trainable=True)
    torch.manual_seed(settings.seed)
    return add_lora(loaded.model, settings)


def run_grpo(settings: GrpoSettings, folder: Path, job: str, loaded: LoadedModel, prompts: Sequence[str],
             rewards: Sequence[Reward], weights: Sequence[float], meta: dict[str, Any],
             stop_ids: Sequence[int] = ()) -> dict[str, Any]:
    """Train (or resume) the policy on `prompts` (chat texts, each row's `example` its index) with the weighted
    `rewards`; save the adapter and its manifest in `folder` (`meta` goes into it); returns the manifest. A
    completion ends at the end of text or at any of `stop_ids` (TRL reads the model's end-of-sequence ids for both
    the generation and the completion mask, so nothing after the stop is trained)."""
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as error:
        raise SystemExit(f"the GRPO jobs need TRL ({error}): pip install 'reasonrec[rl]'") from error
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = folder / CHECKPOINTS
    _claim_checkpoints(folder, settings, job)
    config = GRPOConfig(
        output_dir=str(checkpoints), max_steps=settings.steps, per_device_train_batch_size=settings.prompts_per_step
        * settings.group, num_generations=settings.group, max_completion_length=settings.max_tokens,
        temperature=settings.temperature, top_k=settings.top_k, learning_rate=settings.lr, warmup_steps=0.05,
        lr_scheduler_type="constant_with_warmup", beta=settings.beta, epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high, reward_weights=list(weights), save_steps=settings.checkpoint_steps,
        save_total_limit=1, logging_steps=1, report_to="none", seed=settings.seed, data_seed=settings.seed,
        use_cpu=not torch.cuda.is_available(), bf16=settings.mixed_precision == "bf16", remove_unused_columns=False,
        gradient_checkpointing=False, dataloader_num_workers=0)
    data = Dataset.from_dict({"prompt": list(prompts), "example": list(range(len(prompts)))})
    loaded.model.generation_config.eos_token_id = [loaded.tokenizer.eos_token_id, *stop_ids]
    trainer = GRPOTrainer(model=policy(loaded, settings), reward_funcs=list(rewards), args=config,
                          train_dataset=data, processing_class=loaded.tokenizer)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is not None:
        log.info("resuming %s from %s", folder, last)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    save_adapter(trainer.model, folder, loaded.fingerprint.model_id, adapters=["default"])
    curves = [{k: v for k, v in entry.items() if isinstance(v, int | float)} for entry in trainer.state.log_history]
    manifest = {
        "status": "done", "job": job, **meta,
        "base_model": loaded.fingerprint.to_json(), "template_version": loaded.fingerprint.template_version,
        "config": settings.fingerprint(), "steps": int(trainer.state.global_step),
        "reward_weights": list(weights), "rewards": [type(r).__name__ for r in rewards],
        "train_seconds_this_run": round(time.perf_counter() - started, 1),
        "reward_last10": _mean_last([c["reward"] for c in curves if "reward" in c], 10),
        "curves": curves, "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    replace_text(folder / ADAPTER_META, json.dumps(manifest, indent=1))
    return manifest


def _claim_checkpoints(folder: Path, settings: GrpoSettings, job: str) -> None:
    """Record the settings beside the checkpoints, or refuse checkpoints of other settings."""
    path = folder / RUN_FILE
    if path.is_file():
        check_same_run(folder, json.loads(path.read_text(encoding="utf-8")), settings.fingerprint(), job,
                       ignore=("steps",))
        return
    folder.mkdir(parents=True, exist_ok=True)
    replace_text(path, json.dumps(settings.fingerprint(), indent=1))


def _mean_last(values: list[float], n: int) -> float | None:
    return round(sum(values[-n:]) / len(values[-n:]), 4) if values else None
