"""The ranking harness: one code path that evaluates every ranker (DESIGN.md section 6).

A ranker scores a batch of `Example`s against a fixed list of candidate item ids (full ranking over all
items); the harness removes each example's history items from the candidates, finds the rank of the target
(`trainer.metrics.target_ranks`: ties by candidate order, an unscorable target is a miss) and can keep each
query's top items for a TREC run file. Metrics and intervals come from `trainer.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from trainer.metrics import ranking_metrics, target_ranks
from trainer.splits import Example


class EvalRanker(Protocol):
    """What the harness needs from a ranker."""

    name: str
    batch_size: int
    """Examples per `scores` call (large for cheap rankers, the engine's batch for LLM rankers)."""

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        """(len(examples), candidates) scores in the candidate order the ranker was built with; higher is
        better; -inf for a candidate the ranker cannot score. History items need no special treatment."""
        ...


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
