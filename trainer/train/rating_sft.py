"""Rating SFT (`reasonrec train-rating-sft`): RecOne's warm start ("Think before Recommendation", RecZero/RecOne,
2025) for the rating GRPO of `trainer.train.grpo.rating`: the language model is taught to write the four-tag
answer `/rate` serves, so that GRPO starts from a policy whose answers parse and earn a graded reward (the base model
writes the format in none of its answers, and every reward is then the same -1).

A sample is one seeded training rating per user of the rating protocol (`RatingSplit.training_examples`: the user's
earlier training ratings as the history, at most `MAX_HISTORY_LINES`), prompted as `/rate` prompts it
(`model.prompts.rating_prompt`); the answer is the grounded four-tag reasoning of `model.rating.reasons` around the
served rating model's prediction for that history (the teacher: `reasonrec train-rating`, folded in from the lines
the prompt shows), followed by the end-of-turn token so the model stops after `</rate>`. The loss is the
cross-entropy of the answer tokens only. LoRA (Hu et al., ICLR 2022) on the top `lora_top_layers` layers, trained
by the resumable loop of `trainer.train.sft_loop`. The adapter starts GRPO with `reasonrec train-rating-grpo
--adapter DIR`; `reasonrec eval-llm-rating --adapter DIR` measures it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from indexer.core.catalog import Catalog
from indexer.core.paths import artifacts_dir
from model.engines.loading import load_model
from model.prompts import RATING_TEMPLATE_VERSION, rating_prompt, render_chat
from model.rating.factors import RatingModel
from model.rating.reasons import model_rating
from trainer.data.rating_split import VALID, RatingData, RatingExample
from trainer.train.lora import LoraSettings, add_lora
from trainer.train.rating import RatingTrainConfig, finished_or_trained
from trainer.train.sft_loop import SftRun, run_sft, sft_done

log = logging.getLogger(__name__)


@dataclass
class RatingSftConfig(LoraSettings, RatingData):
    """What `reasonrec train-rating-sft` trains (defaults: about 30 minutes on one CPU thread for SmolLM2)."""

    dataset: str = "ml-100k"
    min_history: int = 3
    """Fewest earlier training ratings a sample shows."""
    samples: int = 300
    """Training samples (one per user, one per step)."""
    rating_model: Path | None = None
    """The teacher's folder; default `reasonrec train-rating`'s for the dataset, trained when missing."""
    lora_dropout: float = 0.0
    lr: float = 2e-4
    """AdamW learning rate."""
    checkpoint_minutes: float = 5.0
    """Minutes between writes of `resume.pt` and the adapter (at most)."""
    seed: int = 0
    """Seed of the LoRA initialization and the samples."""
    out_dir: Path | None = None
    """Adapter folder; default `artifacts/adapters/<dataset>-rating-sft-seed<seed>`."""

    def __post_init__(self) -> None:
        self.check_rating_data()
        self.rating_model = Path(self.rating_model) if self.rating_model is not None else None
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.check_lora()
        if self.samples < 1 or self.min_history < 1:
            raise ValueError("--samples and --min-history must be >= 1")
        if self.lr <= 0 or self.checkpoint_minutes <= 0:
            raise ValueError("--lr and --checkpoint-minutes must be positive")

    @property
    def folder(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-rating-sft-seed{self.seed}"

    def teacher(self) -> RatingTrainConfig:
        """Where the rating model whose answers are taught is (trained there with its defaults when missing)."""
        return RatingTrainConfig(self.dataset, self.data_path, self.valid_frac, self.test_frac, seed=self.seed,
                                 out_dir=self.rating_model)

    def fingerprint(self) -> dict:
        """Everything that decides the result."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k not in ("out_dir", "checkpoint_minutes")}


def teacher_answer(teacher: RatingModel, example: RatingExample, catalog: Catalog) -> str:
    """The four-tag answer `/rate` serves for this history and item (the rating model's, grounded)."""
    return model_rating(teacher, example.history, catalog, example.item, reasoning=True)[1]


def train_rating_sft(config: RatingSftConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the rating SFT adapter; returns its folder."""
    run = SftRun(config.folder, "rating SFT", config.fingerprint(), config.checkpoint_minutes)
    if sft_done(run):
        log.info("%s is already trained with these settings", run.folder)
        return run.folder
    ds, split = config.load_split()
    catalog = split.catalog_before(ds.catalog, VALID)
    examples = split.training_examples(catalog, config.samples, config.min_history, config.seed)
    if not examples:
        raise ValueError(f"no user of {config.dataset} has more than --min-history {config.min_history} training "
                         "ratings")
    teacher = finished_or_trained(config.teacher())
    loaded = load_model(config.model)
    tokenizer = loaded.tokenizer
    torch.manual_seed(config.seed)
    model = add_lora(loaded.model, config)

    def step_loss(step: int) -> torch.Tensor:
        example = examples[step % len(examples)]
        prompt = tokenizer(render_chat(tokenizer, rating_prompt(example.history.lines, example.item)),
                           add_special_tokens=False)["input_ids"]
        answer = tokenizer(teacher_answer(teacher, example, catalog) + tokenizer.eos_token,
                           add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        labels = torch.tensor([[-100] * len(prompt) + answer])
        return model(input_ids=ids, labels=labels).loss

    manifest = {"job": "rating-sft", "command": command,
                "method": "rating SFT (RecOne's warm start): LoRA on [rating prompt][the served grounded four-tag "
                          "answer of the rating model + end of turn], cross-entropy on the answer tokens "
                          "(trainer.train.rating_sft)",
                "base_model": loaded.fingerprint.to_json(), "template_version": RATING_TEMPLATE_VERSION,
                "teacher": {"folder": str(config.teacher().folder), "mean": teacher.mean},
                "data": {"dataset": ds.name, "samples": len(examples), "split": split.describe()}}
    run_sft(run, model, config.lr, config.samples, step_loss, manifest, loaded.fingerprint.model_id, unit="sample")
    return run.folder
