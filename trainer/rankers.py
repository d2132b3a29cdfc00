"""The non-LLM rankers as the evaluation harness sees them (`trainer.evaluate.EvalRanker`): popularity and
SASRec+. The content-only ranker is in `trainer.content`, the LLM rankers in `trainer.llm_rankers`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from model.sasrec import SasrecScorer
from trainer.data import Interaction
from trainer.splits import Example


class PopularityRanker:
    """Items by their number of training interactions (the same score for every user). Ties, e.g. the
    never-seen cold items at 0, fall back to candidate order."""

    name = "popular"
    batch_size = 1024

    def __init__(self, candidates: Sequence[str], train: dict[str, list[Interaction]]) -> None:
        counts = Counter(x.item_id for history in train.values() for x in history)
        self.row = np.array([counts.get(item_id, 0) for item_id in candidates], dtype=np.float64)

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        return np.broadcast_to(self.row, (len(examples), len(self.row)))


class SasrecRanker:
    """A trained SASRec+ scorer; candidates outside its vocabulary (items absent from its training data, such
    as cold items) cannot be scored: -inf, so they rank last and a target among them is a miss."""

    name = "sasrec"
    batch_size = 512

    def __init__(self, scorer: SasrecScorer, candidates: Sequence[str]) -> None:
        self.scorer = scorer
        column = {item_id: j for j, item_id in enumerate(candidates)}
        known = [(code, column[item_id]) for code, item_id in enumerate(scorer.item_ids) if item_id in column]
        self.vocab_rows = np.array([code for code, _ in known], dtype=np.int64)
        self.columns = np.array([j for _, j in known], dtype=np.int64)
        self.n_candidates = len(candidates)

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        vocab_scores = self.scorer.score_batch([[x.item_id for x in e.history] for e in examples])
        out = np.full((len(examples), self.n_candidates), -np.inf)
        out[:, self.columns] = vocab_scores[:, self.vocab_rows]
        return out
