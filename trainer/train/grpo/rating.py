"""Rating GRPO (`reasonrec train-rating-grpo`): the four-tag rating reasoning learned by reinforcement, after RecZero
("Think before Recommendation: ... RecZero", 2025), on TRL's `GRPOTrainer` (`trainer.train.grpo.run`).

Prompts are `/rate`'s RecZero prompt (`model.prompts.rating_prompt`: the user's rated history, the instruction, the
target item) for one seeded training rating per user of the rating protocol (`trainer.data.rating_split`), the
history being that user's earlier training ratings and the catalog's averages the training part's. Each sampled
answer gets RecZero's rule rewards:
- format: +1 when `<analyze user>`, `<analyze item>`, `<match>`, `<rate>` each appear once, in order, non-empty,
  with a whole rating 1..5 (`model.rating.guided.parse_rating_output`, what `/rate` reads), else -1;
- accuracy: 1 - |predicted - true| / 2 when the format holds, else 0.
From the base model (RecZero: a new LoRA, KL to the base model) or from an adapter (`--adapter`: RecOne's SFT warm
start, KL to its frozen copy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.core.paths import artifacts_dir
from model.engines.loading import load_model
from model.prompts import rating_prompt, render_chat
from model.rating.guided import parse_rating_output
from trainer.data.rating_split import VALID, RatingData
from trainer.train.grpo.run import GrpoSettings, finished, run_grpo

log = logging.getLogger(__name__)
JOB = "rating-grpo"


@dataclass
class RatingGrpoConfig(GrpoSettings, RatingData):
    """What `reasonrec train-rating-grpo` trains (the completion budget holds the four tags)."""

    min_history: int = 3
    """Fewest earlier training ratings a training prompt shows."""
    max_tokens: int = 128
    """Token budget of each answer (all four tags)."""
    temperature: float = 1.0
    """Sampling temperature of the answers."""
    format_weight: float = 1.0
    """Weight of the format reward (+1 / -1)."""
    accuracy_weight: float = 1.0
    """Weight of the accuracy reward (1 - |error| / 2 when the format holds)."""

    def __post_init__(self) -> None:
        self.check_rating_data()
        self.check_grpo()
        if self.min_history < 1 or min(self.format_weight, self.accuracy_weight) < 0:
            raise ValueError("--min-history must be >= 1, --format-weight and --accuracy-weight >= 0")

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-rating-grpo-seed{self.seed}"


class Format:
    """RecZero's format reward: +1 for the four tags once each, in order, non-empty, a rating 1..5; else -1."""

    def __call__(self, completions: Sequence[str], **_: Any) -> list[float]:
        return [1.0 if parse_rating_output(text) is not None else -1.0 for text in completions]


class Accuracy:
    """RecZero's accuracy reward: 1 - |predicted - true| / 2 when the format holds, else 0."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = truth

    def __call__(self, completions: Sequence[str], example: Sequence[int], **_: Any) -> list[float]:
        out = []
        for text, row in zip(completions, example, strict=True):
            rating = parse_rating_output(text)
            out.append(0.0 if rating is None else 1.0 - abs(rating - float(self.truth[row])) / 2)
        return out


def training_prompts(config: RatingGrpoConfig) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """One seeded training rating per sampled user (`RatingSplit.training_examples`): its prompt text (before the
    chat template), the true ratings, and what the data was."""
    ds, split = config.load_split()
    examples = split.training_examples(split.catalog_before(ds.catalog, VALID), config.users, config.min_history,
                                       config.seed)
    texts = [rating_prompt(x.history.lines, x.item) for x in examples]
    return texts, np.array([x.truth for x in examples]), {
        "dataset": ds.name, "users": split.n_users, "items": split.n_items, "training_prompts": len(texts),
        "split": split.describe()}


def train_rating_grpo(config: RatingGrpoConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the rating GRPO adapter; returns its folder."""
    folder = config.adapter_dir
    if finished(folder, config, JOB):
        log.info("%s is already trained with these settings", folder)
        return folder
    texts, truth, data = training_prompts(config)
    if not texts:
        raise ValueError(f"no user of {config.dataset} has more than --min-history {config.min_history} training "
                         "ratings")
    loaded = load_model(config.model)
    meta = {"command": command,
            "method": "rating GRPO (RecZero) on TRL's GRPOTrainer: four-tag answers sampled per prompt, reward = "
                      "format (+1/-1) + accuracy (1 - |error| / 2); KL to the starting policy",
            "start_adapter": str(config.adapter) if config.adapter else None, "data": data}
    run_grpo(config, folder, JOB, loaded, [render_chat(loaded.tokenizer, t) for t in texts],
             [Format(), Accuracy(truth)], (config.format_weight, config.accuracy_weight), meta)
    return folder
