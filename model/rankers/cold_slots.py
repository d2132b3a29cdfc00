"""Cold slots: the per-user gate that decides how much of a user's top k the items placed by their text alone may
take (docs/design.md section 2; issue 40, part 2).

Items without interactions (a split's cold items, hot-added items) are scored by `g(c)` alone, and one calibration
(a scale and a bias offset of `g`) cannot serve them beside the warm rows without costing warm targets: on ML-1M a
single offset that lifts cold HR@10 to .039 costs warm HR@10 .08 (`docs/results/bench_cold_tradeoff_ml-1m.md`). The
cold-start literature keeps warm rankings intact by deciding, per user, where new items may enter (ALDI, Huang et
al., SIGIR 2023, decouples the warm and cold scorers for the same reason). The gate here does it at the bottom of
the list: for a user, the best content-served candidates not already in the top k replace the last warm items one
at a time, at most `max_slots` of them, each only while it scores within `margin` of the warm item it displaces. A
user whose best new item is far below their warm list keeps it; one whose best new item is close gets it. With
`exclusive`, content-served items enter the list through the slots only (the rest of it is the warm items' own
ranking): on ML-1M the calibrated offset spends warm accuracy on cold items placed mid-list that rarely hit, while a
user's single best cold candidate is the target about three times as often as the warm item it displaces. The
numbers are chosen on validation under the calibration's warm floor (`trainer.train.table.cold_slots`) and stored in
the table's manifest (`cold_slots`).

The merged list stays sorted by score (without `exclusive`): a candidate outside the top k scores no higher than any
item in it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.rankers.base import RankedItems, top_k_of


@dataclass(frozen=True)
class ColdSlots:
    """The gate: at most `max_slots` content-served items take the last places, each within `margin` (in score
    units; inf: always) of the warm item it displaces; `exclusive`: no content-served item is listed otherwise.
    `max_slots = 0` is no gate (the calibrated list as is)."""

    max_slots: int = 0
    margin: float = 0.0
    exclusive: bool = False

    def __post_init__(self) -> None:
        if self.max_slots < 0 or not self.margin >= 0 or (self.exclusive and not self.max_slots):
            raise ValueError(f"cold slots need max_slots >= 0, margin >= 0 and slots when exclusive, got {self}")

    @property
    def is_off(self) -> bool:
        return self.max_slots == 0

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ColdSlots:
        """The gate a table's manifest holds (`meta["cold_slots"]`; off when there is none)."""
        chosen = meta.get("cold_slots") or {}
        margin = chosen.get("margin", 0.0)
        return cls(int(chosen.get("max_slots", 0)), math.inf if margin is None else float(margin),
                   bool(chosen.get("exclusive", False)))

    def to_meta(self) -> dict[str, Any]:
        """The manifest form (an infinite margin as null: JSON has no inf)."""
        return {"max_slots": self.max_slots, "margin": None if math.isinf(self.margin) else self.margin,
                "exclusive": self.exclusive}

    def merge(self, top: RankedItems, cold: RankedItems, k: int, is_cold: Collection[str]) -> RankedItems:
        """`top`: the k best items of the calibrated scores, best first (with `exclusive`, of the warm items only);
        `cold`: the best content-served candidates (at least `max_slots` of them when there are), best first, under
        the same exclusions; `is_cold`: the ids served by their content alone. The gated top k, best first (with
        `exclusive`, the slots follow the warm items whatever their scores)."""
        kept = list(top[:k])
        if self.is_off or (len(kept) < k and not self.exclusive):  # fewer than k candidates: all are listed
            return kept
        present = {item_id for item_id, _ in kept}
        waiting = [c for c in cold if c[0] not in present]
        while len(kept) < k and waiting:  # exclusive, and fewer warm items than k: new items fill the list
            kept.append(waiting.pop(0))
        lifted: RankedItems = []
        while len(lifted) < self.max_slots and waiting and kept:
            displaced = kept[-1]
            if displaced[0] in is_cold or waiting[0][1] < displaced[1] - self.margin:
                break
            kept.pop()
            lifted.append(waiting.pop(0))
        return kept + lifted

    def top_k(self, scores: np.ndarray, item_ids: list[str], cold_mask: np.ndarray, k: int,
              exclude: Collection[str] = ()) -> RankedItems:
        """The gated top k of one score row over `item_ids` (`cold_mask`: the columns served by content alone)."""
        row = np.asarray(scores, dtype=np.float64)
        top = top_k_of(np.where(cold_mask, -np.inf, row) if self.exclusive else row, item_ids, k, exclude)
        if self.is_off:
            return top
        cold_row = np.where(cold_mask, row, -np.inf)
        cold = top_k_of(cold_row, item_ids, k + self.max_slots, exclude)
        return self.merge(top, cold, k, {item_ids[j] for j in np.flatnonzero(cold_mask)})
