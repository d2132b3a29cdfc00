"""Fitting the cold-slot gate (`model.rankers.cold_slots`) on validation, and measuring it: the targets' places in
the gated top k of a `Ranking` (the calibrated scores of warm rows and content-served items, history excluded).

The gate's numbers (slots, margin, exclusive) are chosen on validation for what it is for, new items' exposure at
the warm level the calibration keeps (`Ranking.best_calibration`): the grid point with the most cold HR@10 among
those that keep the warm targets' NDCG@10 within `warm_tolerance` of its level with every content-served item last
(ties: the better NDCG@10 over all targets). The calibration chose the best NDCG@10 over all targets under the same
floor; the gate spends what is left of the warm budget on the best new items. No gate (`max_slots = 0`, the
calibrated list) is on the grid, so the gate stays off where every point costs more than the budget. `train-table`
fits it after the calibration; `reasonrec fit-cold-slots` fits it for a finished table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.networks.table_artifact import META_FILE
from model.rankers.cold_slots import ColdSlots
from trainer.data.protocols import SplitConfig
from trainer.data.splits import ColdSplit, sample_examples
from trainer.protocol.metrics import ranking_metrics
from trainer.train.table.content import Ranking, content_shown

K = 10
"""The list length the gate is fitted for (the reports' HR@10 / NDCG@10)."""
MAX_SLOTS = (1, 2, 3)
MARGINS_SD = (0.0, 0.25, 0.5, 1.0, 2.0, math.inf)
"""Margins in standard deviations of the warm rows' scores (`Ranking.score_sd`)."""
TARGET = -1
"""The target's id in the per-example lists (warm candidates are 0..k-1, content-served ones k, k+1, ...)."""


@dataclass
class TopLists:
    """Per example, the calibrated top k and the best content-served candidates, as (id, score) lists over
    local ids (the target is `TARGET`): all the gate reads."""

    top: list[list[tuple[int, float]]]
    warm_top: list[list[tuple[int, float]]]
    """The k best warm items alone (what an exclusive gate starts from)."""
    cold: list[list[tuple[int, float]]]
    cold_ids: list[set[int]]
    target_cold: np.ndarray

    @classmethod
    def of(cls, ranked: Ranking, scale: float = 1.0, offset: float = 0.0, k: int = K,
           max_slots: int = max(MAX_SLOTS)) -> TopLists:
        """The lists of `ranked` with g's vector scaled by `scale` and its bias moved by `offset` (1, 0: as
        served, the calibration folded in)."""
        n = len(ranked.target_dot)
        warm = ranked.fixed_scores[:, -k:].flip(1) if n else torch.zeros(0, 0)
        content = (scale * ranked.content_dot + ranked.content_bias + offset).nan_to_num(nan=-math.inf)
        depth = min(k + max_slots, content.shape[1]) if n else 0
        cold = content.topk(depth, dim=1).values if depth else torch.zeros(n, 0)
        target_cold = torch.from_numpy(ranked.target_shown)
        target = torch.where(target_cold, scale * ranked.target_dot + ranked.target_bias + offset,
                             ranked.target_fixed)
        tops, warm_tops, colds, cold_ids = [], [], [], []
        for row in range(n):
            t = float(target[row])
            warm_items = [(j, float(s)) for j, s in enumerate(warm[row].tolist()) if s > -math.inf]
            cold_items = [(k + j, float(s)) for j, s in enumerate(cold[row].tolist()) if s > -math.inf]
            if target_cold[row]:
                cold_items.append((TARGET, t))
            else:
                warm_items.append((TARGET, t))
            by_score = sorted(warm_items + cold_items, key=_order)  # the target first among ties, as `ranks` counts
            tops.append(by_score[:k])
            warm_tops.append(sorted(warm_items, key=_order)[:k])
            colds.append(sorted(cold_items, key=_order))
            cold_ids.append({i for i, _ in cold_items})
        return cls(tops, warm_tops, colds, cold_ids, ranked.target_shown)

    def ranks(self, slots: ColdSlots, k: int = K) -> np.ndarray:
        """1-based ranks of the targets in the gated top k; inf for a target outside it (so only metrics at k or
        less are exact)."""
        out = np.full(len(self.top), np.inf)
        tops = self.warm_top if slots.exclusive else self.top
        for row, (top, cold, is_cold) in enumerate(zip(tops, self.cold, self.cold_ids, strict=True)):
            gated = slots.merge(top, cold, k, is_cold)  # type: ignore[arg-type]  # local int ids for item ids
            for place, (item, _) in enumerate(gated, start=1):
                if item == TARGET:
                    out[row] = place
                    break
        return out


def _order(item: tuple[int, float]) -> tuple[float, int]:
    return (-item[1], 0 if item[0] == TARGET else 1)


def described(slots: ColdSlots, spread: float) -> dict:
    """The gate's manifest form with its margin in standard deviations of the warm scores (`margin_sd`; None: any)."""
    return {**slots.to_meta(), "margin_sd": None if math.isinf(slots.margin) else slots.margin / spread}


def slot_metrics(lists: TopLists, slots: ColdSlots) -> dict[str, float]:
    """NDCG@10 (all, warm targets) and HR@10 (cold, warm targets) under the gate."""
    ranks = lists.ranks(slots)
    metrics = ranking_metrics(ranks)
    hits, ndcg, cold = metrics["HR@10"], metrics["NDCG@10"], lists.target_cold
    return {"ndcg10": float(ndcg.mean()) if len(ndcg) else 0.0,
            "warm_ndcg10": float(ndcg[~cold].mean()) if (~cold).any() else 0.0,
            "cold_hr10": float(hits[cold].mean()) if cold.any() else 0.0,
            "warm_hr10": float(hits[~cold].mean()) if (~cold).any() else 0.0}


def fit_cold_slots(ranked: Ranking, scale: float, offset: float, warm_tolerance: float) -> tuple[ColdSlots, dict]:
    """The gate chosen on `ranked` (validation) for the calibration (`scale`, `offset`), and what it measured: every
    grid point's metrics and the warm floor. Margins are stored in score units."""
    lists = TopLists.of(ranked, scale, offset)
    spread = ranked.score_sd()
    floor = ranked.warm_floor(warm_tolerance)
    grid = [ColdSlots()] + [ColdSlots(m, margin * spread, exclusive) for exclusive in (False, True)
                            for m in MAX_SLOTS for margin in MARGINS_SD]
    rows, best, best_key = [], grid[0], (False, -1.0, -1.0)
    for slots in grid:
        measured = slot_metrics(lists, slots)
        rows.append({**described(slots, spread), **measured})
        feasible = measured["warm_ndcg10"] >= floor
        key = (feasible, measured["cold_hr10"] if feasible else measured["warm_ndcg10"], measured["ndcg10"])
        if key > best_key:
            best, best_key = slots, key
    return best, {"warm_ndcg10_floor": floor, "score_sd": spread, "grid": rows}


@dataclass
class FitColdSlotsConfig(SplitConfig):
    """What `reasonrec fit-cold-slots` fits: the gate of a finished table (one made before `train-table` fitted it,
    e.g. the shipped one), on the validation split the table was trained with."""

    model: str = "smollm2"
    """Language model of the table's item states (read from the table cache): smollm2, tiny or an HF folder."""
    seed: int = 0
    """Seed of the table and SASRec+ runs (their folders)."""
    table: Path | None = None
    """Item-table folder (default: where `reasonrec train-table` writes it); its table.json gets `cold_slots`."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ folder the table was built on (default: where `reasonrec train-sasrec` writes it)."""


def refit_cold_slots(config: FitColdSlotsConfig, command: str = "") -> tuple[ColdSlots, Path]:
    """Fit the gate of a finished table as `train-table` does (same validation examples and stand-ins, its warm
    tolerance) and write it into the table's manifest; returns the gate and the manifest's path. The weights and
    so the table's hash (index manifests, caches) do not change."""
    from model.engines.transformers_engine import load_engine
    from trainer.train.table.served import load_served_table

    served = load_served_table(config.dataset, config.protocol, load_engine(config.model), config.data_path,
                               config.cold_frac, config.split_seed, config.seed, config.table,
                               config.sasrec_checkpoint)
    trained = served.artifact.meta.get("config", {})
    stand_ins = 0.0 if isinstance(served.split, ColdSplit) else float(trained.get("cold_frac", config.cold_frac))
    seed = int(trained.get("seed", config.seed))
    valid_users = int(trained.get("valid_users", 0))
    valid = sample_examples(served.split.valid, valid_users, seed) if valid_users else served.split.valid
    model = served.artifact.model
    ranked = Ranking(model, served.fixed, served.features, valid, served.artifact.code_of,
                     content_shown(model, stand_ins, seed))
    slots, fit = fit_cold_slots(ranked, 1.0, 0.0, float(trained.get("warm_tolerance", 0.05)))
    served.artifact.save(served.table_folder, {**served.artifact.meta,
                                               "cold_slots": {**slots.to_meta(), "valid": fit, "command": command}})
    return slots, served.table_folder / META_FILE
