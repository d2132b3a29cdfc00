"""The content-only ranker: the cold-start baseline every language-model ranker must beat.

Items are embedded from their text alone by MiniLM (`model.networks.minilm`); a user is the mean of their history items'
vectors, score = cosine. History entries given by title only are embedded from that title. Because only text is
used, brand-new (cold or hot-added) items are scored exactly like known ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from indexer.core.catalog import Item
from model.networks.minilm import TextEncoder, item_text
from model.prompts import UserHistory
from model.rankers.base import ScoreRanker


class ContentRanker(ScoreRanker):
    name = "content"

    def __init__(self, encoder: TextEncoder, items: Sequence[Item],
                 known: Mapping[str, np.ndarray] | None = None) -> None:
        """Rank `items`; vectors in `known` (by item id) are reused, the other items are encoded here."""
        known = known or {}
        missing = [item for item in items if item.item_id not in known]
        fresh = dict(zip([item.item_id for item in missing],
                         encoder.encode([item_text(item) for item in missing]) if missing else [], strict=True))
        self.encoder = encoder
        self.item_ids = [item.item_id for item in items]
        self.item_vectors = np.asarray([fresh[i] if i in fresh else known[i] for i in self.item_ids], np.float32)
        self.row_of = {item_id: j for j, item_id in enumerate(self.item_ids)}

    def user_vectors(self, histories: Sequence[UserHistory]) -> np.ndarray:
        """Unit mean vector of each history's items (zeros for a history with nothing to read)."""
        titles = sorted({line.title for h in histories for line, i in zip(h.lines, h.item_ids, strict=True)
                         if i not in self.row_of})
        by_title = dict(zip(titles, self.encoder.encode(titles), strict=True)) if titles else {}
        users = np.zeros((len(histories), self.item_vectors.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            vectors = [self.item_vectors[self.row_of[i]] if i in self.row_of else by_title[line.title]
                       for line, i in zip(history.lines, history.item_ids, strict=True)]
            if vectors:
                users[row] = np.mean(vectors, axis=0)
        norms = np.linalg.norm(users, axis=1, keepdims=True)
        return users / np.where(norms > 0, norms, 1.0)

    def scores(self, histories: Sequence[UserHistory]) -> np.ndarray:
        users = self.user_vectors(histories)
        out = (users @ self.item_vectors.T).astype(np.float64)
        out[~users.any(axis=1)] = -np.inf
        return out
