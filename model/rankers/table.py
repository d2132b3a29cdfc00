"""User vectors over the item table (`model.networks.item_table`; docs/design.md section 2), and the ranker of the
sequence encoder alone.

The item index of a table (`indexer` metric "ip") holds every item's row [v, b]; a user's history enters the
encoder `s` as the rows of its items read back from that index, so hot-added items count as soon as they are
indexed. A history entry given by title only (a film the catalog lacks) is left out of `s` by the served rankers
(the language model still reads it in the prompt): placed by g from its text it cost more than leaving it out
(`docs/results/ml-100k-leave-one-out-title-history.md`); `history_rows` places it so, when given a featurizer,
for that measurement. The query is [u, 1], so the index's inner product is the score u . v + b.

`TableRanker` ranks with `s(history)` alone (no language model): the "s alone" row of every report; with
`residuals=False` the items keep their content part only ("without e").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from indexer.store import ItemStore
from model.networks.item_features import ContentFeaturizer
from model.networks.table_artifact import TableArtifact
from model.prompts import UserHistory
from model.rankers.base import ScoreRanker

HeadUse = Literal["none", "residual", "alone"]
"""How the language model's state enters: not at all (s alone), u = s + f(h) (served), u = f(h) (ablation)."""


def history_rows(store: ItemStore, history: UserHistory, max_len: int,
                 featurizer: ContentFeaturizer | None, table: TableArtifact) -> np.ndarray:
    """The [v, b] rows of the history's items (oldest first, the `max_len` most recent that can be read)."""
    known = [i for i in history.item_ids if i is not None and store.get(i) is not None]
    rows = dict(zip(known, store.vectors_of(known), strict=True)) if known else {}
    titles = [line.title for line, i in zip(history.lines, history.item_ids, strict=True) if i is None]
    if titles and featurizer is not None:
        text_rows = table.content_rows(featurizer.of_titles(titles))
        rows |= {f"title:{t}": r for t, r in zip(titles, text_rows, strict=True)}
    keys = [i if i is not None else f"title:{line.title}" for line, i in zip(history.lines, history.item_ids,
                                                                            strict=True)]
    out = [rows[k] for k in keys if k in rows][-max_len:]
    return np.stack(out) if out else np.zeros((0, table.model.config.dim + 1), dtype=np.float32)


def user_vectors(table: TableArtifact, histories: Sequence[np.ndarray], states: np.ndarray | None = None,
                 head: HeadUse = "none") -> np.ndarray:
    """User vectors (n, dim) from each history's item rows (L_i, dim + 1) and, for a head, the language model's
    states (n, state_dim). A history with no row gives s = 0 (only the head speaks for it)."""
    model, dim = table.model, table.model.config.dim
    lengths = torch.tensor([len(h) for h in histories])
    users = torch.zeros(len(histories), dim)
    with torch.inference_mode():
        if head != "alone" and len(lengths) and int(lengths.max()) > 0:
            width = int(lengths.max())
            inputs = torch.zeros(len(histories), width, dim)
            for row, rows in enumerate(histories):
                inputs[row, : len(rows)] = torch.from_numpy(np.asarray(rows[:, :dim], dtype=np.float32))
            has = lengths > 0
            users[has] = model.user_vectors(inputs[has], lengths[has])
        if head != "none":
            if states is None:
                raise ValueError("a head needs the language model's states")
            h = torch.from_numpy(np.asarray(states, dtype=np.float32))
            if head == "alone":
                if table.alone is None:
                    raise ValueError("this table has no f(h)-alone head")
                users = table.alone(h)
            else:
                users = users + model.head_term(h)
    return users.numpy()


def queries(users: np.ndarray) -> np.ndarray:
    """[u, 1]: the index's inner product with [v, b] is u . v + b."""
    return np.hstack([users, np.ones((len(users), 1), dtype=np.float32)]).astype(np.float32)


class TableRanker(ScoreRanker):
    """s(history) alone over a table's item index; `residuals=False`: every item's content part only."""

    name = "table"

    def __init__(self, table: TableArtifact, store: ItemStore, residuals: bool = True) -> None:
        self.table, self.store = table, store
        self.item_ids = store.catalog.ids()
        self.rows = store.vectors_of(self.item_ids)
        if not residuals:
            self.name = "table-content"
            self.rows = self.content_rows(self.rows)

    def content_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows with the residuals of the table's items taken out (what g(c) alone gives them)."""
        residual = self.table.model.residual.weight.detach().numpy()
        code = self.table.code_of
        out = rows.copy()
        for row, item_id in enumerate(self.item_ids):
            if item_id in code and bool(self.table.model.warm[code[item_id]]):
                out[row] -= residual[code[item_id]]
        return out

    def scores(self, histories: Sequence[UserHistory]) -> np.ndarray:
        max_len = self.table.model.config.max_len
        rows = [history_rows(self.store, h, max_len, None, self.table) for h in histories]
        if self.name == "table-content":
            position = {i: r for r, i in enumerate(self.item_ids)}
            rows = [self.rows[[position[i] for i in h.item_ids if i in position]][-max_len:] for h in histories]
        users = user_vectors(self.table, rows)
        out = (queries(users) @ self.rows.T).astype(np.float64)
        out[[len(r) == 0 for r in rows]] = -np.inf
        return out
