"""What every ranker reads and returns, shared by the service and the evaluation harness.

A ranker core ranks the catalog for a user's history. The service (`service.rankers`) wraps a core with caching,
request coalescing, deadlines and fallback; the evaluation harness (`trainer.protocol.harness`) wraps the same
core with batching and a disk cache, so what is measured is what is served (docs/design.md, "Rankers").

Cheap cores (`ScoreRanker`) score every item they know at once: `scores(histories)` is a matrix whose columns
are `item_ids`; `top_k` takes one row's best items. The language-model cores (`model.rankers.llm`) split into an
engine stage (slow, cached) and a search stage over the item index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar

import numpy as np

from model.prompts import UserHistory

RankedItems = list[tuple[str, float]]
"""(item id, score) pairs, best first."""


def top_k_of(scores: np.ndarray, item_ids: Sequence[str], k: int, exclude: Collection[str] = ()) -> RankedItems:
    """The k best (item id, score) of one score row over `item_ids`, best first, ties by column order; items in
    `exclude` and items scored -inf (unscorable) are never returned."""
    row = np.asarray(scores, dtype=np.float64).copy()
    if exclude:
        column = {item_id: j for j, item_id in enumerate(item_ids)}
        row[[column[i] for i in exclude if i in column]] = -np.inf
    finite = np.flatnonzero(np.isfinite(row))
    k = min(k, len(finite))
    if k <= 0:
        return []
    kth_best = -np.partition(-row[finite], k - 1)[k - 1]
    tied_or_better = finite[row[finite] >= kth_best]  # all ties at the boundary, so the order decides among them
    best = tied_or_better[np.lexsort((tied_or_better, -row[tied_or_better]))][:k]
    return [(item_ids[j], float(row[j])) for j in best]


class ScoreRanker(ABC):
    """A ranker that scores every item it knows for a batch of histories at once."""

    name: ClassVar[str]
    uses_engine: ClassVar[bool] = False
    """True when ranking runs the language model (slow; may time out, so it cannot be the fallback)."""
    item_ids: list[str]
    """The items this ranker can score, in the column order of `scores`."""

    @abstractmethod
    def scores(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """(len(histories), len(item_ids)) scores, higher is better; -inf where an item cannot be scored (a row of
        -inf: the ranker cannot rank for that history at all)."""

    def top_k(self, history: UserHistory, k: int, exclude: Collection[str] = ()) -> RankedItems:
        """The k best items for `history`, never one of `exclude`; [] when the ranker cannot rank for it."""
        return top_k_of(self.scores([history])[0], self.item_ids, k, exclude)
