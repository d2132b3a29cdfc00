"""The ranking harness: one code path that evaluates every ranker (docs/design.md, "Evaluation").

The rankers are the cores the service serves (`model.rankers`): `CoreRanker` puts a cheap core's columns in
candidate order, `trainer.evaluation.llm.LlmEvalRanker` adds a disk cache to a language-model core. A ranker
scores a batch of `Example`s against a fixed list of candidate item ids (full ranking over all items); the
harness removes each example's history items from the candidates, finds the rank of the target
(`trainer.protocol.metrics.target_ranks`: ties by candidate order, an unscorable target is a miss) and can
keep each query's top items for a TREC run file. Metrics and intervals come from `trainer.protocol.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from indexer.core.catalog import Catalog
from model.prompts import UserHistory
from model.rankers.base import ScoreRanker
from trainer.data.splits import Example
from trainer.protocol.metrics import ranking_metrics, target_ranks


class EvalRanker(Protocol):
    """What the harness needs from a ranker."""

    name: str
    batch_size: int
    """Examples per `scores` call (large for cheap rankers, the engine's batch for LLM rankers)."""

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        """(len(examples), candidates) scores in the candidate order the ranker was built with; higher is
        better; -inf for a candidate the ranker cannot score. History items need no special treatment."""
        ...


def user_history(example: Example, catalog: Catalog) -> UserHistory:
    """The example's history as the service would receive it (catalog items with ratings and times)."""
    return UserHistory.of_items([(x.item_id, x.rating, x.timestamp) for x in example.history], catalog)


class CoreRanker:
    """A `ScoreRanker` core of `model.rankers` as the harness sees it: its columns in candidate order, -inf for a
    candidate it cannot score."""

    def __init__(self, core: ScoreRanker, catalog: Catalog, candidates: Sequence[str], batch_size: int = 512) -> None:
        self.core, self.catalog, self.name, self.batch_size = core, catalog, core.name, batch_size
        column = {item_id: j for j, item_id in enumerate(candidates)}
        known = [(row, column[i]) for row, i in enumerate(core.item_ids) if i in column]
        self.rows = np.array([row for row, _ in known], dtype=np.int64)
        self.columns = np.array([j for _, j in known], dtype=np.int64)
        self.n_candidates = len(candidates)

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        scores = self.core.scores([user_history(e, self.catalog) for e in examples])
        out = np.full((len(examples), self.n_candidates), -np.inf)
        out[:, self.columns] = scores[:, self.rows]
        return out


@dataclass
class RankingResult:
    """Ranks of the targets of `examples` (inf = miss) and, when asked for, each query's top items."""

    ranker: str
    examples: list[Example]
    ranks: np.ndarray
    seconds: float
    top: list[list[tuple[str, float]]] = field(default_factory=list)

    def per_query(self) -> dict[str, np.ndarray]:
        return ranking_metrics(self.ranks)

    def subset(self, examples: Sequence[Example]) -> RankingResult:
        """The result restricted to `examples` (a subset of `self.examples`, matched by user and target)."""
        position = {(e.user_id, e.target.item_id): i for i, e in enumerate(self.examples)}
        rows = [position[(e.user_id, e.target.item_id)] for e in examples]
        return RankingResult(self.ranker, [self.examples[i] for i in rows], self.ranks[rows], self.seconds,
                             [self.top[i] for i in rows] if self.top else [])


def rank_examples(ranker: EvalRanker, examples: Sequence[Example], candidates: Sequence[str],
                  keep_top: int = 0, desc: str | None = None) -> RankingResult:
    """Score every example with `ranker`, exclude its history, rank its target; keep the top `keep_top`."""
    column = {item_id: j for j, item_id in enumerate(candidates)}
    ranks: list[np.ndarray] = []
    top: list[list[tuple[str, float]]] = []
    start = time.perf_counter()
    with tqdm(total=len(examples), desc=desc or f"ranking with {ranker.name}", unit="user") as bar:
        for first in range(0, len(examples), ranker.batch_size):
            batch = list(examples[first : first + ranker.batch_size])
            scores = np.array(ranker.scores(batch), dtype=np.float64)
            if scores.shape != (len(batch), len(candidates)):
                raise ValueError(f"{ranker.name} returned scores of shape {scores.shape}, expected "
                                 f"{(len(batch), len(candidates))}")
            for row, example in enumerate(batch):
                scores[row, [column[x.item_id] for x in example.history if x.item_id in column]] = -np.inf
            ranks.append(target_ranks(scores, np.array([column.get(e.target.item_id, -1) for e in batch])))
            if keep_top:
                top.extend(_top_items(scores, candidates, keep_top))
            bar.update(len(batch))
    return RankingResult(ranker.name, list(examples), np.concatenate(ranks) if ranks else np.zeros(0),
                         time.perf_counter() - start, top)


def _top_items(scores: np.ndarray, candidates: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row the best k scorable candidates (finite score), by descending score then candidate order."""
    out = []
    for row in scores:
        finite = np.flatnonzero(np.isfinite(row))
        order = finite[np.lexsort((finite, -row[finite]))][:k]
        out.append([(candidates[j], float(row[j])) for j in order])
    return out
