"""Preference SFT of the language model as the user (`reasonrec train-judge`): the simulated user of seed 001
(arXiv 2511.21989), taught the way seed 000 teaches its judge, on pairs whose answer is known.

A sample is a training user cut at a seeded point of their training history: the history before the cut, the item
right after it (what the user did watch next) and a seeded item with a training interaction that the user never
rated, as choices A and B of `model.prompts.preference_prompt` in both orders (one step holds both). The loss is the
cross-entropy of the right letter against the other at the answer's first token, which is what
`model.preference.prefer_first` reads; the items are warm, but the model sees only their text, as it would a cold
item's. LoRA (Hu et al., ICLR 2022) on the top `lora_top_layers` layers. `resume.pt` (LoRA weights, optimizer,
progress) and the adapter are written every `checkpoint_minutes`; rerunning the same command resumes and is a no-op
once done. The adapter is merged into the judge by `reasonrec experiment simulated-users --judge-adapter`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

from indexer.core.durable import replace_text
from indexer.core.paths import artifacts_dir
from model.engines.base import single_token_ids
from model.engines.loading import ADAPTER_META, load_model
from model.engines.transformers_engine import left_padded_positions
from model.prompts import PREFERENCE_CHOICES, PREFERENCE_TEMPLATE_VERSION, HistoryLine, preference_prompt, render_chat
from trainer.data.protocols import SplitConfig, check_same_run
from trainer.data.splits import Split
from trainer.machine import machine_line
from trainer.train.lora import LoraSettings, add_lora, save_adapter

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


@dataclass
class JudgeSftConfig(SplitConfig, LoraSettings):
    """What `reasonrec train-judge` trains (defaults: about 25 minutes on one CPU thread for SmolLM2)."""

    protocol: str = "cold-items"
    """The split whose training histories give the samples."""
    lora_dropout: float = 0.0
    pairs: int = 300
    """Training samples (steps), each asked in both orders."""
    min_history: int = 5
    """Fewest history items before a cut."""
    lr: float = 2e-4
    """AdamW learning rate."""
    checkpoint_minutes: float = 5.0
    """Minutes between writes of `resume.pt` and the adapter (at most)."""
    seed: int = 0
    """Seed of the LoRA initialization and the samples."""
    out_dir: Path | None = None
    """Adapter folder; default `artifacts/adapters/<dataset>-<protocol>-judge-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        super().__post_init__()
        self.check_lora()
        if self.pairs < 1 or self.min_history < 1:
            raise ValueError("--pairs and --min-history must be >= 1")
        if self.lr <= 0 or self.checkpoint_minutes <= 0:
            raise ValueError("--lr and --checkpoint-minutes must be positive")

    @property
    def folder(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-judge-seed{self.seed}"

    def fingerprint(self) -> dict:
        """Everything that decides the result."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in ("out_dir", "checkpoint_minutes")}


@dataclass(frozen=True)
class JudgeSample:
    user: str
    cut: int
    """History items before the cut."""
    watched: str
    unrated: str


def judge_samples(split: Split, n: int, min_history: int, seed: int) -> list[JudgeSample]:
    """`n` seeded samples (see the module docstring) from users with more than `min_history` training items."""
    users = sorted(u for u, h in split.train.items() if len(h) > min_history)
    if not users:
        raise ValueError(f"no training history is longer than --min-history {min_history}")
    trained = sorted({x.item_id for h in split.train.values() for x in h})
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        user = rng.choice(users)
        history = split.train[user]
        rated = {x.item_id for x in history}
        cut = rng.randrange(min_history, len(history))
        unrated = rng.choice(trained)
        while unrated in rated:
            unrated = rng.choice(trained)
        samples.append(JudgeSample(user, cut, history[cut].item_id, unrated))
    return samples


def train_judge(config: JudgeSftConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the judge adapter; returns its folder."""
    folder = config.folder
    meta_path = folder / ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        check_same_run(folder, meta.get("config", {}), config.fingerprint(), "judge SFT")
        if meta.get("status") == "done":
            log.info("%s is already trained with these settings", folder)
            return folder
    ds, split = config.load()
    loaded = load_model(config.model)
    tokenizer, catalog = loaded.tokenizer, ds.catalog
    torch.manual_seed(config.seed)
    model = add_lora(loaded.model, config)
    letters = torch.tensor(single_token_ids(tokenizer, PREFERENCE_CHOICES))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    samples = judge_samples(split, config.pairs, config.min_history, config.seed)
    step, losses, seconds = 0, [], 0.0
    resume = folder / RESUME_FILE
    if resume.is_file():
        from peft import set_peft_model_state_dict

        saved = torch.load(resume, weights_only=True)
        check_same_run(folder, saved["config"], config.fingerprint(), "judge SFT")
        set_peft_model_state_dict(model, saved["lora"])
        optimizer.load_state_dict(saved["optimizer"])
        step, losses, seconds = saved["step"], list(saved["losses"]), saved["seconds"]
        log.info("resuming %s after step %d", folder, step)

    def save(status: str) -> None:
        from peft import get_peft_model_state_dict

        save_adapter(model, folder, loaded.fingerprint.model_id)
        if status != "done":
            torch.save({"config": config.fingerprint(), "lora": get_peft_model_state_dict(model),
                        "optimizer": optimizer.state_dict(), "step": step, "losses": losses, "seconds": seconds},
                       folder / (RESUME_FILE + ".tmp"))
            (folder / (RESUME_FILE + ".tmp")).replace(resume)
        elif resume.exists():
            resume.unlink()
        recent = losses[-50:]
        replace_text(folder / ADAPTER_META, json.dumps({
            "status": status, "job": "judge-sft", "command": command,
            "method": "preference SFT: LoRA on [history][A/B choice of the next item and an unrated one], "
                      "two-way cross-entropy at the answer token, both orders (trainer.train.judge)",
            "base_model": loaded.fingerprint.to_json(), "template_version": PREFERENCE_TEMPLATE_VERSION,
            "config": config.fingerprint(), "data": {"dataset": ds.name, "split": split.protocol},
            "steps": step, "train_seconds": round(seconds, 1),
            "loss_last50": sum(recent) / len(recent) if recent else None, "losses": [round(x, 4) for x in losses],
            "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds")}, indent=1))

    model.train()
    last_save = time.monotonic()
    bar = tqdm(total=len(samples), initial=step, desc="judge SFT", unit="pair")
    while step < len(samples):
        started = time.perf_counter()
        sample = samples[step]
        history = [HistoryLine.of_item(catalog[x.item_id], x.rating, x.timestamp)
                   for x in split.train[sample.user][: sample.cut]]
        watched, unrated = catalog[sample.watched], catalog[sample.unrated]
        texts = [render_chat(tokenizer, preference_prompt(history, watched, unrated)),
                 render_chat(tokenizer, preference_prompt(history, unrated, watched))]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        positions = left_padded_positions(batch["attention_mask"])
        logits = model(**batch, position_ids=positions).logits[:, -1][:, letters].float()
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        seconds += time.perf_counter() - started
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if time.monotonic() - last_save > 60 * config.checkpoint_minutes and step < len(samples):
            save("training")
            last_save = time.monotonic()
    bar.close()
    model.eval()
    save("done")
    return folder
