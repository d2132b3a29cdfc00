"""The resumable loop of the small LoRA SFT jobs (`trainer.train.judge`, `trainer.train.rating_sft`): one loss per
step from the job, AdamW, a progress bar, and every `checkpoint_minutes` the adapter, `resume.pt` (LoRA weights,
optimizer, progress) and `reasonrec-adapter.json` (status, settings, losses, the job's own fields), each written to a
temporary name first. Rerunning the same settings resumes after the last checkpoint and is a no-op once done; other
settings in the same folder are refused (`check_same_run`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from indexer.core.durable import replace_text
from model.engines.loading import ADAPTER_META
from trainer.data.protocols import check_same_run
from trainer.machine import machine_line
from trainer.train.lora import save_adapter

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


@dataclass(frozen=True)
class SftRun:
    """Where a job writes, what it is, and what decides its result."""

    folder: Path
    job: str
    """The job's name in the manifest and in errors ("judge SFT")."""
    fingerprint: dict[str, Any]
    """Everything that decides the result (a rerun with others is refused)."""
    checkpoint_minutes: float


def sft_done(run: SftRun) -> bool:
    """Whether `run.folder` holds a finished run of these settings (other settings there raise)."""
    path = run.folder / ADAPTER_META
    if not path.is_file():
        return False
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_same_run(run.folder, meta.get("config", {}), run.fingerprint, run.job)
    return meta.get("status") == "done"


def run_sft(run: SftRun, model: torch.nn.Module, lr: float, steps: int, step_loss: Callable[[int], torch.Tensor],
            manifest: dict[str, Any], model_id: str, unit: str = "step") -> None:
    """Train `model` (a peft model) for `steps` steps of `step_loss(step)` from where `run.folder` stopped, writing
    the adapter and its manifest (`manifest`: the job's own fields, e.g. command, method, base model, data)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    step, losses, seconds = 0, [], 0.0
    resume = run.folder / RESUME_FILE
    if resume.is_file():
        saved = torch.load(resume, weights_only=True)
        check_same_run(run.folder, saved["config"], run.fingerprint, run.job)
        set_peft_model_state_dict(model, saved["lora"])
        optimizer.load_state_dict(saved["optimizer"])
        step, losses, seconds = saved["step"], list(saved["losses"]), saved["seconds"]
        log.info("resuming %s after step %d", run.folder, step)

    def save(status: str) -> None:
        save_adapter(model, run.folder, model_id)
        if status != "done":
            tmp = run.folder / (RESUME_FILE + ".tmp")
            torch.save({"config": run.fingerprint, "lora": get_peft_model_state_dict(model),
                        "optimizer": optimizer.state_dict(), "step": step, "losses": losses, "seconds": seconds}, tmp)
            tmp.replace(resume)
        elif resume.exists():
            resume.unlink()
        recent = losses[-50:]
        replace_text(run.folder / ADAPTER_META, json.dumps({
            "status": status, **manifest, "config": run.fingerprint, "steps": step, "train_seconds": round(seconds, 1),
            "loss_last50": sum(recent) / len(recent) if recent else None, "losses": [round(x, 4) for x in losses],
            "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds")}, indent=1))

    model.train()
    last_save = time.monotonic()
    bar = tqdm(total=steps, initial=step, desc=run.job, unit=unit)
    while step < steps:
        started = time.perf_counter()
        loss = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        seconds += time.perf_counter() - started
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if time.monotonic() - last_save > 60 * run.checkpoint_minutes and step < steps:
            save("training")
            last_save = time.monotonic()
    bar.close()
    model.eval()
    save("done")
