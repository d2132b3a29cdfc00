"""Preference SFT of the language model as the user (`reasonrec train-judge`): the simulated user of seed 001
(arXiv 2511.21989), taught the way seed 000 teaches its judge, on pairs whose answer is known.

A sample is a training user cut at a seeded point of their training history: the history before the cut, the item
right after it (what the user did watch next) and a seeded item with a training interaction that the user never
rated, as choices A and B of `model.prompts.preference_prompt` in both orders (one step holds both). The loss is the
cross-entropy of the right letter against the other at the answer's first token, which is what
`model.preference.prefer_first` reads; the items are warm, but the model sees only their text, as it would a cold
item's. LoRA (Hu et al., ICLR 2022) on the top `lora_top_layers` layers, trained by the resumable loop of
`trainer.train.sft_loop` (rerunning the same command resumes and is a no-op once done). The adapter is merged
into the judge by `reasonrec experiment simulated-users --judge-adapter`; beside it, `pool.json`
(`model.judge_pool`) holds the seeded training users the gateway's simulated-user job asks the judge as
(`service.simulated_users`, with REASONREC_JUDGE set to the folder).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from indexer.core.paths import artifacts_dir
from model.engines.base import single_token_ids
from model.engines.loading import load_model
from model.engines.transformers_engine import left_padded_positions
from model.judge_pool import POOL_FILE, JudgePool
from model.prompts import PREFERENCE_CHOICES, PREFERENCE_TEMPLATE_VERSION, HistoryLine, preference_prompt, render_chat
from trainer.data.protocols import SplitConfig
from trainer.data.splits import Split
from trainer.train.lora import LoraSettings, add_lora
from trainer.train.sft_loop import SftRun, run_sft, sft_done

log = logging.getLogger(__name__)


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
    pool_users: int = 120
    """Training users written to the folder's `pool.json` (seeded by `seed`): whom the served judge answers as."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        super().__post_init__()
        self.check_lora()
        if self.pairs < 1 or self.min_history < 1 or self.pool_users < 1:
            raise ValueError("--pairs, --min-history and --pool-users must be >= 1")
        if self.lr <= 0 or self.checkpoint_minutes <= 0:
            raise ValueError("--lr and --checkpoint-minutes must be positive")

    @property
    def folder(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-judge-seed{self.seed}"

    def fingerprint(self) -> dict:
        """Everything that decides the result."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in ("out_dir", "checkpoint_minutes", "pool_users")}


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


def pool_users(split: Split, n: int, seed: int) -> list[str]:
    """`n` seeded training users (all of them when fewer), in a fixed order."""
    candidates = sorted(u for u, history in split.train.items() if history)
    return sorted(random.Random(seed).sample(candidates, min(n, len(candidates))))


def write_pool(config: JudgeSftConfig, split: Split, command: str) -> Path:
    """The folder's `pool.json`: `config.pool_users` seeded training users and their training histories."""
    users = pool_users(split, config.pool_users, config.seed)
    histories = {u: [(x.item_id, x.rating, x.timestamp) for x in split.train[u]] for u in users}
    source = {"dataset": config.dataset, "split": split.protocol, "seed": config.seed, "command": command}
    path = config.folder / POOL_FILE
    JudgePool.of(histories, source).save(path)
    return path


def train_judge(config: JudgeSftConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the judge adapter and write its pool when missing; returns its folder."""
    run = SftRun(config.folder, "judge SFT", config.fingerprint(), config.checkpoint_minutes)
    if sft_done(run):
        log.info("%s is already trained with these settings", run.folder)
        if not (run.folder / POOL_FILE).is_file():
            write_pool(config, config.load()[1], command)
        return run.folder
    ds, split = config.load()
    loaded = load_model(config.model)
    tokenizer, catalog = loaded.tokenizer, ds.catalog
    torch.manual_seed(config.seed)
    model = add_lora(loaded.model, config)
    letters = torch.tensor(single_token_ids(tokenizer, PREFERENCE_CHOICES))
    samples = judge_samples(split, config.pairs, config.min_history, config.seed)

    def step_loss(step: int) -> torch.Tensor:
        sample = samples[step]
        history = [HistoryLine.of_item(catalog[x.item_id], x.rating, x.timestamp)
                   for x in split.train[sample.user][: sample.cut]]
        watched, unrated = catalog[sample.watched], catalog[sample.unrated]
        texts = [render_chat(tokenizer, preference_prompt(history, watched, unrated)),
                 render_chat(tokenizer, preference_prompt(history, unrated, watched))]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        positions = left_padded_positions(batch["attention_mask"])
        logits = model(**batch, position_ids=positions).logits[:, -1][:, letters].float()
        return torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))

    manifest = {"job": "judge-sft", "command": command,
                "method": "preference SFT: LoRA on [history][A/B choice of the next item and an unrated one], "
                          "two-way cross-entropy at the answer token, both orders (trainer.train.judge)",
                "base_model": loaded.fingerprint.to_json(), "template_version": PREFERENCE_TEMPLATE_VERSION,
                "data": {"dataset": ds.name, "split": split.protocol}}
    run_sft(run, model, config.lr, len(samples), step_loss, manifest, loaded.fingerprint.model_id, unit="pair")
    write_pool(config, split, command)
    return run.folder
