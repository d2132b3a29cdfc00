"""The language-model rankers: `reasoning` (think up to `<answer>`, the state there) and `direct` (the assistant
turn is just `<answer>`: one forward pass), as docs/design.md section 2 defines them.

Two stages. `encode` runs the engine on user prompts and yields the model's state `h` (the slow part: the service
caches and coalesces it under a deadline, the evaluation caches it on disk); `search` ranks the item index with
it, history excluded. With an item table (`model.networks.item_table`, the served default) the user vector is
`u = s(history) + f(h)` searched against the table's rows (`model.rankers.table`; `head="alone"` ranks with f(h)
alone, the ablation); without one, `h` itself is searched by cosine against the raw item states (the "no table"
ablation), plus, with a popularity prior, w x log(1 + the item's interaction count) (`indexer.prior`). The
`reasoning` ranker adds the conclusion term (`model.rankers.conclusion`): the genre and decade its reasoning
concludes raise the items of that genre and decade by learned weights.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from indexer.core.catalog import Catalog
from indexer.store import ItemStore
from model.claims import Prediction
from model.engines.base import Engine
from model.networks.table_artifact import TableArtifact
from model.prompts import UserHistory, user_prompt
from model.rankers.base import RankedItems, top_k_of
from model.rankers.cold_slots import ColdSlots
from model.rankers.conclusion import ConclusionTerm, conclusion
from model.rankers.table import HeadUse, history_rows, queries, user_vectors

LLM_MODES = ("direct", "reasoning")


@dataclass(frozen=True)
class UserState:
    """What the engine stage yields for one user prompt."""

    vector: np.ndarray
    """float32 (hidden,), the final hidden state at `<answer>`."""
    reasoning: str | None = None
    """The reasoning text before `<answer>` (reasoning mode only)."""
    generated_tokens: int = 0
    wrote_marker: bool = False
    """True when the model wrote `<answer>` itself (reasoning mode)."""

    def meta(self) -> dict[str, Any]:
        """Everything but the vector, as JSON (what caches store beside it)."""
        return {"reasoning": self.reasoning, "generated_tokens": self.generated_tokens,
                "wrote_marker": self.wrote_marker}

    @classmethod
    def from_meta(cls, vector: np.ndarray, meta: Mapping[str, Any]) -> UserState:
        return cls(vector, meta.get("reasoning"), int(meta.get("generated_tokens", 0)),
                   bool(meta.get("wrote_marker", False)))


class LlmRanker:
    """User vectors from the engine, ranked by the item index."""

    uses_engine: ClassVar[bool] = True

    def __init__(self, mode: str, engine: Engine, table: TableArtifact | None = None, head: HeadUse = "residual",
                 term: ConclusionTerm | None = None) -> None:
        if mode not in LLM_MODES:
            raise ValueError(f"LLM ranker mode must be one of {', '.join(LLM_MODES)}, got {mode!r}")
        if table is not None and head == "residual" and (not table.has_head or table.model.head_is_zero):
            head = "none"  # f(h) adds nothing: s(history) alone
        self.name = self.mode = mode
        self.engine, self.table, self.head = engine, table, head
        self.term = term if term is not None and mode == "reasoning" else ConclusionTerm()
        self.slots = ColdSlots.from_meta(table.meta) if table is not None else ColdSlots()
        self._content_served: tuple[Catalog, list[str], frozenset[str]] | None = None

    @property
    def state_in_score(self) -> bool:
        """Whether the model's state enters the score (a head on it, or the raw state by cosine)."""
        return self.table is None or self.head != "none"

    @property
    def needs_engine(self) -> bool:
        """Whether ranking runs the model: not for `direct` when its state adds nothing to the score."""
        return self.mode == "reasoning" or self.state_in_score

    def notes(self) -> tuple[str, ...]:
        """What a response should say about the model's part in this ranking (and about the cold slots)."""
        return self._model_notes() + self._slot_notes()

    def _slot_notes(self) -> tuple[str, ...]:
        if self.slots.is_off:
            return ()
        only = "only " if self.slots.exclusive else ""
        return (f"items placed by their text alone (no interactions yet) are listed {only}in up to "
                f"{self.slots.max_slots} of the last places when they score within {self.slots.margin:.3g} of the item "
                "they displace",)

    def _model_notes(self) -> tuple[str, ...]:
        if self.mode == "direct":
            return () if self.state_in_score else (
                "the head on the model's state is zero (it kept its zero start in training): direct ranks by "
                "s(history) alone and runs no forward pass",)
        if not self.term.is_zero:
            return (f"the reasoning's conclusion enters the score (+{self.term.genre:g} for its genre, "
                    f"+{self.term.decade:g} for its decade)"
                    + ("" if self.state_in_score else "; the head on the state after it is zero"),)
        return () if self.state_in_score else (
            "the reasoning does not enter the score (the head on its state is zero and there is no conclusion "
            "term): the list is s(history) alone",)

    @staticmethod
    def prompt(history: UserHistory) -> str:
        return user_prompt(history.lines)

    def settings(self, reasoning_tokens: int) -> dict[str, Any]:
        """Everything besides the prompt that changes the engine's output (part of every cache key)."""
        if self.mode == "direct":
            return {"greedy": True}
        return {"greedy": True, "max_new_tokens": reasoning_tokens, "adapter": self.engine.reasoning_adapter}

    def encode(self, prompts: Sequence[str], reasoning_tokens: int) -> list[UserState]:
        """The engine stage: one `UserState` per prompt."""
        if self.mode == "direct":
            return [UserState(vector) for vector in self.engine.embed_direct(list(prompts))]
        return [UserState(r.vector, r.text, r.generated_tokens, r.wrote_marker)
                for r in self.engine.reason(list(prompts), reasoning_tokens)]

    def usable(self, store: ItemStore, state: np.ndarray) -> bool:
        """Whether a (cached or computed) state can rank: with a table a finite vector of the model's width, else
        one the raw index can search (finite, not zero once centered)."""
        if self.table is None:
            return store.searchable(state)
        return state.shape == (self.engine.hidden_size,) and bool(np.isfinite(state).all())

    def conclusions(self, reasonings: Sequence[str | None], catalog: Catalog) -> list[Prediction | None]:
        """What each reasoning concludes (None without a conclusion, and for `direct`)."""
        if self.mode != "reasoning":
            return [None] * len(reasonings)
        return [conclusion(text, catalog) for text in reasonings]

    def search(self, store: ItemStore, histories: Sequence[UserHistory], states: np.ndarray, k: int,
               exclude: Sequence[Collection[str]], popularity_prior: float = 0.0,
               counts: Mapping[str, int] | None = None,
               predictions: Sequence[Prediction | None] | None = None) -> list[RankedItems]:
        """The search stage: the k best items per user (history and state `states` row), never one of that row's
        `exclude`; without a table `counts` are the prior's interaction counts (default: the catalog's); with the
        conclusion term, row i's `predictions[i]` (`conclusions`) raises the items it names."""
        states = np.asarray(states, dtype=np.float32)
        terms = None
        if predictions is not None and not self.term.is_zero:
            terms = [self.term.bonus(p, store.catalog) for p in predictions]
        if self.table is None:
            return store.search(states, k, exclude, popularity_prior, counts, terms)
        max_len = self.table.model.config.max_len
        rows = [history_rows(store, h, max_len, None, self.table) for h in histories]  # titles: the prompt only
        users = queries(user_vectors(self.table, rows, states, self.head))
        cold_ids, is_cold = ([], frozenset()) if self.slots.is_off else self._content_served_of(store.catalog)
        if not cold_ids:
            return store.search(users, k, exclude, terms=terms)
        warm_only = [set(row) | is_cold for row in exclude] if self.slots.exclusive else exclude
        results = store.search(users, k, warm_only, terms=terms)
        cold_scores = users @ store.vectors_of(cold_ids).T
        gated = []
        for row, top in enumerate(results):
            bonus = terms[row] if terms else {}
            scored = cold_scores[row] + np.array([bonus.get(i, 0.0) for i in cold_ids])
            cold = top_k_of(scored, cold_ids, k + self.slots.max_slots, exclude[row])
            gated.append(self.slots.merge(top, cold, k, is_cold))
        return gated

    def _content_served_of(self, catalog: Catalog) -> tuple[list[str], frozenset[str]]:
        """The catalog's items served by g(c) alone (cold, hot-added), as a list and a set, kept per catalog
        version."""
        assert self.table is not None
        known = self._content_served
        if known is None or known[0] is not catalog:
            ids = catalog.ids()
            served = [i for i, by_content in zip(ids, self.table.content_served(ids), strict=True) if by_content]
            known = (catalog, served, frozenset(served))
            self._content_served = known
        return known[1], known[2]
