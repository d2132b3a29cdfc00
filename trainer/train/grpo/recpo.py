"""RecPO (`reasonrec train-recpo`): reinforcement learning of the taught reasoning against the ranking it leads to,
after R2ec ("Towards Large Recommender Models with Reasoning", Yang et al., 2025), on TRL's `GRPOTrainer`
(`trainer.train.grpo.run`).

Per training user (the whole window of a seeded training-split cut, `trainer.reasoning.samples`) the policy (the
reasoning SFT adapter, trained further, KL to its frozen copy) samples `group` reasonings; each is scored by the
served ranking it leads to and by its form:
- rank: R2ec's fused reward 0.95 x NDCG(the target's rank among all items) + 0.05 x the target's softmax
  probability, under the served score after that reasoning: s(history) (SASRec+, as `reasonrec train-conclusion`
  measures it; the served table's s and warm rows are SASRec+'s) plus the conclusion term of what the reasoning
  concludes (`model.rankers.conclusion`), the user's own items excluded;
- marker: 1 when the model wrote `<answer>` itself within the budget;
- faithfulness: the share of its claims that are true of the history (`trainer.reasoning.checker`).
The reward is their weighted sum (`rank_weight`, `marker_weight`, `faithfulness_weight`).

Why the score reads the conclusion and not the state: the served head f(h) on the state trained to zero on ML-1M
and ML-100k (docs/design.md section 2), so the state adds nothing to the served score and the reward needs no
forward pass beyond TRL's; with the reward a function of the text, TRL's trainer runs unchanged. The shipped
conclusion weights are zero too (the SFT conclusion earned none), which would make every reasoning of a group
rank alike: then the reward's term is the probe `PROBE_TERM` (recorded in the manifest), and `reasonrec
train-conclusion` refits the served weights on the trained adapter.
Generation stops at the marker's last token (`marker_stop`), so no token after `<answer>` is sampled or trained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.core.paths import artifacts_dir
from model.claims import decade_of, parse
from model.engines.loading import load_model
from model.networks.sasrec import SasrecScorer
from model.prompts import ANSWER_MARKER, render_chat
from model.rankers.conclusion import ConclusionTerm
from model.rankers.llm import LlmRanker
from model.rankers.sasrec import SasrecRanker
from trainer.data.protocols import SplitConfig
from trainer.data.splits import Example
from trainer.protocol.harness import user_history
from trainer.protocol.metrics import target_ranks
from trainer.reasoning.checker import check_text
from trainer.reasoning.facts import HistoryFacts, ReasoningContext
from trainer.reasoning.rationales import example_facts
from trainer.reasoning.samples import window_examples
from trainer.train.conclusion import find_sasrec, history_scores
from trainer.train.grpo.run import GrpoSettings, finished, run_grpo

log = logging.getLogger(__name__)
JOB = "recpo"
PROBE_TERM = ConclusionTerm(genre=1.0, decade=1.0)
"""The reward's conclusion term when the adapter's served one is zero (in the units of SASRec+'s scores)."""


@dataclass
class RecpoConfig(SplitConfig, GrpoSettings):
    """What `reasonrec train-recpo` trains (defaults: R2ec's group of 4 at temperature 1.5, lr 1e-5, clip 0.2 /
    0.28, with a small KL to the SFT adapter)."""

    sasrec_checkpoint: Path | None = None
    """SASRec+ of the same split (s); default the trained one for this protocol, else the shipped one."""
    term_genre: float = -1.0
    """Conclusion weight of the genre in the reward; < 0: the adapter's served one, or the probe when that is zero."""
    term_decade: float = -1.0
    """Conclusion weight of the decade in the reward; < 0 as for the genre."""
    rank_weight: float = 1.0
    """Weight of the rank reward (0.95 NDCG + 0.05 softmax probability of the target)."""
    marker_weight: float = 0.1
    """Weight of the marker reward (1 when `<answer>` was written)."""
    faithfulness_weight: float = 0.1
    """Weight of the faithfulness reward (share of true claims)."""
    min_lines: int = 8
    """Fewest history lines a training user has."""
    recent: int = 50
    """A window ends among its user's N most recent training interactions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_grpo()
        if self.adapter is None:
            raise ValueError("--adapter is needed: RecPO starts from the reasoning SFT adapter (`reasonrec "
                             "train-reasoning`; the shipped ML-100k one is deploy/artifacts/ml-100k/reasoning)")
        self.sasrec_checkpoint = Path(self.sasrec_checkpoint) if self.sasrec_checkpoint else None
        if min(self.rank_weight, self.marker_weight, self.faithfulness_weight) < 0:
            raise ValueError("--rank-weight, --marker-weight and --faithfulness-weight must be >= 0")
        if not 1 <= self.min_lines <= 20 or self.recent < 1:
            raise ValueError("--min-lines must be in 1..20 and --recent >= 1")

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir or artifacts_dir() / "adapters" / f"{self.dataset}-{self.protocol}-recpo-seed{self.seed}"

    def reward_term(self) -> tuple[ConclusionTerm, str]:
        """The conclusion term of the rank reward and where it comes from."""
        assert self.adapter is not None
        served = ConclusionTerm.load(self.adapter)
        given = ConclusionTerm(max(self.term_genre, 0.0), max(self.term_decade, 0.0))
        if self.term_genre >= 0 and self.term_decade >= 0:
            return given, "flags"
        return (served, "adapter") if not served.is_zero else (PROBE_TERM, "probe (the adapter's term is zero)")


class ServedRank:
    """R2ec's fused rank reward of each reasoning under s(history) + the conclusion term."""

    def __init__(self, scores: np.ndarray, targets: np.ndarray, items: Sequence[Any], term: ConclusionTerm,
                 genres: dict[str, str]) -> None:
        self.scores, self.targets, self.term, self.genres = scores, targets, term, genres
        self.genre_items = {g: np.array([g in item.genres for item in items]) for g in genres.values()}
        decades = np.array([decade_of(item.year) if item.year is not None else -1 for item in items])
        self.decade_items = {int(d): decades == d for d in np.unique(decades) if d >= 0}

    def __call__(self, completions: Sequence[str], example: Sequence[int], **_: Any) -> list[float]:
        return [self.reward(text, row) for text, row in zip(completions, example, strict=True)]

    def reward(self, completion: str, row: int) -> float:
        prediction = parse(reasoning_of(completion), self.genres).prediction
        scores = self.scores[row].copy()
        if prediction is not None:
            if prediction.genre in self.genre_items:
                scores += self.term.genre * self.genre_items[prediction.genre]
            if prediction.decade in self.decade_items:
                scores += self.term.decade * self.decade_items[prediction.decade]
        target = int(self.targets[row])
        rank = target_ranks(scores[None], np.array([target]))[0]
        ndcg = 0.0 if not np.isfinite(rank) else 1.0 / float(np.log2(1.0 + rank))
        finite = scores[np.isfinite(scores)]
        top = finite.max()
        probability = float(np.exp(scores[target] - top) / np.exp(finite - top).sum()) if np.isfinite(rank) else 0.0
        return 0.95 * ndcg + 0.05 * probability


class Marker:
    """1 when the completion holds `<answer>` (the model closed its reasoning within the budget), else 0."""

    def __call__(self, completions: Sequence[str], **_: Any) -> list[float]:
        return [float(ANSWER_MARKER in text) for text in completions]


class Faithfulness:
    """The share of the reasoning's claims that are true of the history (0 for a reasoning with no claim)."""

    def __init__(self, facts: Sequence[HistoryFacts], genres: dict[str, str]) -> None:
        self.facts, self.genres = facts, genres

    def __call__(self, completions: Sequence[str], example: Sequence[int], **_: Any) -> list[float]:
        out = []
        for text, row in zip(completions, example, strict=True):
            check = check_text(reasoning_of(text), self.facts[row], self.genres)
            out.append(check.true_claims / check.claims if check.claims else 0.0)
        return out


def reasoning_of(completion: str) -> str:
    """The reasoning a completion holds: its text before `<answer>` (all of it without the marker)."""
    return completion.split(ANSWER_MARKER, 1)[0]


def marker_stop(tokenizer: Any) -> int:
    """The token that ends `<answer>` (its last token however the text before it merges with its start)."""
    ids = [tokenizer(text + ANSWER_MARKER, add_special_tokens=False)["input_ids"][-1] for text in ("", "Drama.", "x")]
    if len(set(ids)) != 1:
        raise ValueError(f"this tokenizer ends {ANSWER_MARKER} with different tokens in context: {ids}")
    return ids[0]


def training_users(split: Any, config: RecpoConfig) -> list[Example]:
    """One example per seeded training window: the window's history and the interaction after it."""
    return [cuts[-1] for cuts in window_examples(split, config.users, 1, config.min_lines, config.recent,
                                                 config.seed)]


def train_recpo(config: RecpoConfig, command: str = "") -> Path:
    """Train (or resume, or find done) the RecPO adapter; returns its folder."""
    folder = config.adapter_dir
    if finished(folder, config, JOB):
        log.info("%s is already trained with these settings", folder)
        return folder
    ds, split = config.load()
    context = ReasoningContext(ds.catalog)
    examples = training_users(split, config)
    if not examples:
        raise ValueError(f"no training user of {ds.name} has more than --min-lines {config.min_lines} interactions")
    sasrec = find_sasrec(config.dataset, config.protocol, config.sasrec_checkpoint)
    ranker = SasrecRanker(SasrecScorer.load(sasrec))
    histories = [user_history(e, ds.catalog) for e in examples]
    scores, targets = history_scores(examples, histories, ranker)
    term, term_source = config.reward_term()
    loaded = load_model(config.model)
    prompts = [render_chat(loaded.tokenizer, LlmRanker.prompt(h)) for h in histories]
    rewards = [ServedRank(scores, targets, [ds.catalog[i] for i in ranker.item_ids], term, context.genres), Marker(),
               Faithfulness([example_facts(e, context) for e in examples], context.genres)]
    meta = {"command": command,
            "method": "RecPO (R2ec) on TRL's GRPOTrainer: group-relative advantages of sampled reasonings, reward = "
                      "rank (0.95 NDCG + 0.05 softmax probability of the target under s(history) + the conclusion "
                      "term) + marker + faithfulness; KL to the starting adapter",
            "start_adapter": str(config.adapter), "reward_term": {**asdict(term), "source": term_source},
            "sasrec": str(sasrec), "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                                            "training_users": len(examples)},
            "split": {"protocol": split.protocol}}
    weights = (config.rank_weight, config.marker_weight, config.faithfulness_weight)
    run_grpo(config, folder, JOB, loaded, prompts, rewards, weights, meta, [marker_stop(loaded.tokenizer)])
    return folder

