"""The SASRec+ ranker (`model.networks.sasrec`): the production ranker the language model is measured against.

SASRec knows only the items of its training data: history entries it has never seen (and entries given by title
only) are skipped, and items it has never seen cannot be scored. A history with no item it knows gives a row of
-inf: the ranker cannot rank for it (the service then answers with its fallback instead of an arbitrary order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.networks.sasrec import SasrecScorer
from model.prompts import UserHistory
from model.rankers.base import ScoreRanker


class SasrecRanker(ScoreRanker):
    name = "sasrec"

    def __init__(self, scorer: SasrecScorer) -> None:
        self.scorer = scorer
        self.item_ids = scorer.item_ids

    def scores(self, histories: Sequence[UserHistory]) -> np.ndarray:
        ids = [[i for i in h.item_ids if i is not None] for h in histories]
        out = self.scorer.score_batch(ids).astype(np.float64)
        out[[not self.scorer.codes(h) for h in ids]] = -np.inf
        return out
