"""The popularity ranker: every user gets the items with the most interactions, ties in the given item order.

The service counts the catalog's ratings (`Item.rating_count`); the evaluation counts training interactions
only, so no held-out interaction leaks into the ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model.prompts import UserHistory
from model.rankers.base import ScoreRanker


class PopularRanker(ScoreRanker):
    name = "popular"

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.item_ids = list(counts)
        self.row = np.array([counts[i] for i in self.item_ids], dtype=np.float64)

    def scores(self, histories: Sequence[UserHistory]) -> np.ndarray:
        return np.broadcast_to(self.row, (len(histories), len(self.row)))
