"""The item table on a trained SASRec+ (`reasonrec train-table`): the encoder `s` and the warm items' rows are
SASRec+'s and stay frozen; only the content map `g` is trained, so that an item shown by `g(c)` alone ranks where
its future users are among the warm items (docs/design.md section 2).

Training is DropoutNet's (Volkovs et al., NeurIPS 2017) with the warm side fixed: at each step a random
`residual_dropout` share of the items is shown through `g(c)` instead of its SASRec+ row, under the full softmax
over the warm items at every position (SASRec+'s loss, Klenitskiy & Vasilev, RecSys 2023); the user vectors come from
the frozen encoder, so a step is one forward pass of it and a small MLP. Validation serves some items by `g(c)`
alone (`content_shown`: a cold-items split's cold items, else a seeded share of warm stand-ins) and the rest by
their rows, calibrates how the two compete (`calibrate`: a scale of g's vector and an offset of its bias, chosen
so that warm targets keep their level) and early-stops on that calibrated NDCG@10.

Served rows stay `[v_i, b_i] = g(c_i) + e_i`: when a model is saved the residuals are set to `e_i = w_i - g(c_i)`
(`w_i` the SASRec+ row, bias 0), so every warm item's row is exactly SASRec+'s and a cold or hot-added one's is
`g(c)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.networks.item_table import TableModel, scores
from model.networks.sasrec import PAD, SasrecScorer, finished_checkpoint, right_padded
from trainer.data.splits import Example
from trainer.protocol.metrics import mean_metrics, ranking_metrics
from trainer.train.epochs import EpochRun, EpochState, run_epochs, softmax_epoch
from trainer.train.table.config import TableTrainConfig

log = logging.getLogger(__name__)
VALID_BATCH = 256


def load_sasrec(folder: Path) -> SasrecScorer:
    """The finished SASRec+ checkpoint the table is built on."""
    if not finished_checkpoint(folder):
        raise FileNotFoundError(f"no finished SASRec+ checkpoint in {folder} to build the item table on: train it "
                                "with `reasonrec train-sasrec` (same dataset, protocol and seed) or name one with "
                                "--sasrec-checkpoint")
    return SasrecScorer.load(folder)


def start_from_sasrec(model: TableModel, code: dict[str, int], sasrec: SasrecScorer) -> torch.Tensor:
    """Copy SASRec+'s encoder into `model` (shaped like it), freeze it and the residuals, and return SASRec+'s item
    rows (n_items + 1, dim + 1): its embedding and bias 0 for its items, zeros for the others."""
    net, config = sasrec.net, model.config
    missing = [item_id for item_id in sasrec.item_ids if item_id not in code]
    if missing:
        raise ValueError(f"{len(missing)} items of the SASRec+ checkpoint are not in the table's catalog "
                         f"(first: {missing[0]})")
    fixed = torch.zeros(config.n_items + 1, config.dim + 1)
    with torch.no_grad():
        fixed[torch.tensor([code[item_id] for item_id in sasrec.item_ids]), :-1] = net.item_emb.weight[1:]
        model.positions.weight.copy_(net.pos_emb.weight)
        model.blocks.load_state_dict(net.blocks.state_dict())
        model.final_norm.load_state_dict(net.final_norm.state_dict())
    for module in (model.residual, model.positions, model.blocks, model.final_norm):
        module.requires_grad_(False)
    log.info("the table is built on SASRec+ (%d items); only g is trained", len(sasrec.item_ids))
    return fixed


def train_content_map(model: TableModel, fixed: torch.Tensor, features: torch.Tensor, config: TableTrainConfig,
                      sequences: list[list[int]], valid: Sequence[Example], code: dict[str, int],
                      stand_in_share: float, save: Callable[[EpochState], None]) -> EpochState:
    """Train g (resumable per epoch) and return the progress; `save` writes the model when validation improves,
    after the residuals were folded so that warm rows equal `fixed`; validation serves `content_shown` items by
    g(c)."""
    optimizer = torch.optim.Adam(model.content_map.parameters(), lr=config.lr)
    order_gen = torch.Generator().manual_seed(config.seed)
    run = EpochRun(config.folder, config.fingerprint(), "item-table", model, optimizer, order_gen)
    shown = content_shown(model, stand_in_share, config.seed)

    def save_best(state: EpochState) -> None:
        fold_residuals(model, fixed, features)
        save(state)

    return run_epochs(run, config.max_epochs, config.patience,
                      lambda epoch: _epoch(model, fixed, features, optimizer, sequences, config.residual_dropout,
                                           config.batch_size, order_gen, epoch),
                      lambda: validate_with_content_shown(model, fixed, features, valid, code, shown,
                                                          config.warm_tolerance), save_best)


def fold_residuals(model: TableModel, fixed: torch.Tensor, features: torch.Tensor) -> None:
    """Set every warm item's residual to its fixed row minus g(c), so that `model.table(features)` serves `fixed`
    for warm items and g(c) for the others."""
    model.eval()
    with torch.no_grad():
        model.residual.weight.copy_((fixed - model.content_rows(features)) * model.warm[:, None])


def _epoch(model: TableModel, fixed: torch.Tensor, features: torch.Tensor, optimizer: torch.optim.Optimizer,
           sequences: list[list[int]], residual_dropout: float, batch_size: int, order_gen: torch.Generator,
           epoch: int) -> float:
    """One pass over the users in a seeded order; each step shows a fresh random item share through g(c)."""
    model.eval()  # the frozen encoder without dropout
    model.content_map.train()
    not_warm = ~model.warm[1:]

    def logits_of(inputs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = model.encode(fixed[inputs, :-1], (inputs != PAD).sum(dim=1))[real]
        shown_by_content = torch.rand(len(fixed)) < residual_dropout
        rows = torch.where(shown_by_content[:, None], model.content_rows(features), fixed)
        return scores(hidden, rows[1:]).masked_fill(not_warm, float("-inf"))

    return softmax_epoch(sequences, batch_size, order_gen, epoch, optimizer, logits_of)


def content_shown(model: TableModel, stand_in_share: float, seed: int) -> torch.Tensor:
    """The items validation serves through g(c) alone (n_items + 1,) bool: those without a residual (a cold-items
    split's cold items) and a seeded `stand_in_share` of the warm ones (0 with real cold items; leave-one-out has
    none to speak of), standing in for cold items; so that validation sees cold items compete with warm ones."""
    generator = torch.Generator().manual_seed(seed)
    shown = ~model.warm | (torch.rand(len(model.warm), generator=generator) < stand_in_share)
    shown[PAD] = False
    return shown


def validate_with_content_shown(model: TableModel, fixed: torch.Tensor, features: torch.Tensor,
                                examples: Sequence[Example], code: dict[str, int], shown: torch.Tensor,
                                warm_tolerance: float) -> dict[str, float]:
    """Mean metrics of the examples with the `shown` items served by g(c) alone and every other item by its fixed
    row (full ranking, history excluded), under the calibration `calibrate` would choose now, so that epochs are
    compared as they would be served; `HR@10 cold` / `HR@10 warm` split the hits by the target, `scale` and
    `offset` are the calibration. Examples without a history item in the table are left out."""
    ranked = Ranking(model, fixed, features, examples, code, shown)
    scale, offset, _ = ranked.best_calibration(warm_tolerance)
    ranks = ranked.ranks(scale, offset)
    hits, cold = ranks <= 10, ranked.target_shown
    return {**mean_metrics(ranking_metrics(ranks)),
            "HR@10 cold": float(hits[cold].mean()) if cold.any() else float("nan"),
            "HR@10 warm": float(hits[~cold].mean()) if (~cold).any() else float("nan"),
            "scale": scale, "offset": offset}


def calibrate(model: TableModel, ranked: Ranking, warm_tolerance: float) -> dict[str, float]:
    """Choose a scale of g's vector and an offset of its bias on validation examples ranked with some items served
    by g(c) alone (`ranked`, made with `model`; `Ranking.best_calibration`) and fold them into g's output layer: how
    items placed by their content alone compete with the warm items' SASRec+ rows. Returns the choice and the
    NDCG@10 before and after."""
    scale, offset, after = ranked.best_calibration(warm_tolerance)
    output = model.content_map.net[-1]
    with torch.no_grad():
        output.weight[:-1] *= scale
        output.bias[:-1] *= scale
        output.bias[-1] += offset
    before = float(ranking_metrics(ranked.ranks(1.0, 0.0))["NDCG@10"].mean()) if len(ranked.target_dot) else 0.0
    return {"scale": scale, "offset": offset, "valid_ndcg10_before": before, "valid_ndcg10_after": after,
            "content_shown_items": ranked.shown_items}


def rows_as_read(model: TableModel, fixed: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Every item's row (n_items + 1, dim + 1) as the encoder `s` reads it in a history: a warm item's fixed row,
    any other item's g row from `content`."""
    return torch.where(model.warm[:, None], fixed, content)


CALIBRATION_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


class Ranking:
    """The parts of the ranking that do not depend on g's scale and bias offset, per example: the fixed rows'
    scores (history and target excluded, sorted), u . g(c) and g_b(c) of the shown items, and the target's. The
    history is read as served (warm items by their fixed rows), so only items without a residual in it move with
    the calibration (none in leave-one-out)."""

    def __init__(self, model: TableModel, fixed: torch.Tensor, features: torch.Tensor, examples: Sequence[Example],
                 code: dict[str, int], shown: torch.Tensor) -> None:
        model.eval()
        max_len = model.config.max_len
        usable = [e for e in examples if any(x.item_id in code for x in e.history)]
        by_row = ~shown
        by_row[PAD] = False
        parts: list[tuple[torch.Tensor, ...]] = []
        with torch.inference_mode():
            content = model.content_rows(features)
            history_rows = rows_as_read(model, fixed, content)  # as served: shown stand-ins keep theirs
            self.content_bias = content[shown, -1]
            for first in tqdm(range(0, len(usable), VALID_BATCH), desc="validating", unit="batch", leave=False):
                batch = usable[first : first + VALID_BATCH]
                histories = [[code[x.item_id] for x in e.history if x.item_id in code][-max_len:] for e in batch]
                users = model.user_vectors(history_rows[right_padded(histories), :-1],
                                           torch.tensor([len(h) for h in histories]))
                targets = torch.tensor([code[e.target.item_id] for e in batch])
                fixed_scores = scores(users, fixed).masked_fill(~by_row, float("-inf"))
                content_dot = users @ content[:, :-1].T
                index = torch.arange(len(batch))
                target_fixed = fixed_scores[index, targets].clone()
                target_dot, target_bias = content_dot[index, targets], content[targets, -1]
                excluded = torch.zeros_like(fixed_scores, dtype=torch.bool)
                for row, history in enumerate(histories):
                    excluded[row, history] = True
                excluded[index, targets] = True
                parts.append((fixed_scores.masked_fill(excluded, float("-inf")).sort(dim=1).values,
                              content_dot[:, shown].masked_fill(excluded[:, shown], float("nan")),
                              target_dot, target_bias, target_fixed, shown[targets]))
        empty = not parts
        self.fixed_scores = torch.zeros(0, 1) if empty else torch.cat([p[0] for p in parts])
        self.content_dot = torch.zeros(0, 0) if empty else torch.cat([p[1] for p in parts])
        self.target_dot, self.target_bias, self.target_fixed, target_shown = (
            (torch.zeros(0),) * 3 + (torch.zeros(0, dtype=torch.bool),) if empty
            else tuple(torch.cat([p[i] for p in parts]) for i in range(2, 6)))
        self.target_shown = target_shown.numpy()
        self.shown_items = int(shown.sum())

    def best_calibration(self, warm_tolerance: float) -> tuple[float, float, float]:
        """(scale, offset, NDCG@10) of the grid point (scales `CALIBRATION_SCALES`, offsets from -6 to +2 standard
        deviations of the fixed rows' scores) with the best NDCG@10 among those that keep the warm targets' NDCG@10
        within `warm_tolerance` (relative) of its level with every content-served item last: cold items placed as
        well as they can be at that cost to the warm ones (else the point that costs them least)."""
        if not len(self.target_dot):
            return 1.0, 0.0, 0.0
        spread = self.score_sd()
        grid = [(scale, float(offset) * spread) for scale in CALIBRATION_SCALES for offset in np.linspace(-6, 2, 81)]
        warm = ~self.target_shown
        floor = self.warm_floor(warm_tolerance)
        best, best_key = grid[0], (False, -1.0, -1.0)
        for scale, offset in grid:
            ndcg = ranking_metrics(self.ranks(scale, offset))["NDCG@10"]
            warm_ndcg = float(ndcg[warm].mean()) if warm.any() else 0.0
            key = (warm_ndcg >= floor, float(ndcg.mean()) if warm_ndcg >= floor else warm_ndcg, float(ndcg.mean()))
            if key > best_key:
                best, best_key = (scale, offset), key
        return best[0], best[1], best_key[2]

    def warm_floor(self, warm_tolerance: float) -> float:
        """The warm targets' NDCG@10 with every content-served item last, less `warm_tolerance` of it: the level the
        calibration and the cold-slot gate keep (0 without warm targets)."""
        warm = ~self.target_shown
        if not warm.any():
            return 0.0
        return (1 - warm_tolerance) * float(ranking_metrics(self.ranks(1.0, -1e9))["NDCG@10"][warm].mean())

    def score_sd(self) -> float:
        """Standard deviation of the fixed rows' scores: the unit of the calibration's offsets."""
        finite = self.fixed_scores[torch.isfinite(self.fixed_scores)]
        return float(finite.std()) if finite.numel() > 1 else 1.0

    def ranks_among_shown(self) -> np.ndarray:
        """1-based ranks of the targets among the `shown` items alone (the others are no candidates; history
        excluded), as served (the calibration folded into g): the scale and offset of `ranks` move every shown item
        alike, so they cannot change this order. Only for the examples whose target is shown (`target_shown`)."""
        rows = torch.from_numpy(self.target_shown)
        target = (self.target_dot + self.target_bias)[rows]
        content_scores = self.content_dot[rows] + self.content_bias  # nan (excluded) compares false
        return (1 + (content_scores > target[:, None]).sum(dim=1)).double().numpy()

    def ranks(self, scale: float, offset: float) -> np.ndarray:
        """1-based ranks of the targets with g's vector scaled by `scale` and its bias moved by `offset`."""
        if not len(self.target_dot):
            return np.zeros(0)
        target = torch.where(torch.from_numpy(self.target_shown),
                             scale * self.target_dot + self.target_bias + offset, self.target_fixed)
        width = self.fixed_scores.shape[1]
        above_fixed = width - torch.searchsorted(self.fixed_scores, target[:, None].contiguous(), right=True)[:, 0]
        content_scores = scale * self.content_dot + self.content_bias + offset  # nan (excluded) compares false
        above_content = (content_scores > target[:, None]).sum(dim=1)
        return (1 + above_fixed + above_content).double().numpy()
