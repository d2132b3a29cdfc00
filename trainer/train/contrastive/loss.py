"""The full-softmax alignment loss of user and item vectors and its item table (docs/design.md section 5, CL).

Each user vector (`direct` mode) is scored against every item of `ItemTable`, a detached table of the current
model's item vectors, by centered cosine / temperature, and trained with softmax cross-entropy towards the item
they take next: the exact full-softmax gradient for the user side, as long as the table holds one model's vectors.
So the training job re-encodes and re-centers the whole table at every validation and never overwrites rows in
between (a table whose rows come from different models teaches the model to tell newer rows from older ones).

The table's rows carry no gradient, so the item side's part of the same gradient, (p_ij - y_ij) u_i / temperature
for every item j, goes to fresh vectors (`item_side_term`): the targets' (the pull) and those of a few items
drawn from the batch's softmax mixed with uniform (`draw_items`), importance-weighted so that the push is an
unbiased estimate over all items, tail items included. This is the proposal distribution of sampled softmax
(Bengio and Senecal, "Adaptive Importance Sampling to Accelerate Training of a Neural Probabilistic Language
Model", IEEE TNN 2008), used here for the item side only. Pull and push balance in expectation, so a drift shared by
every item vector earns nothing.

Masked (never negatives): the user's own items other than the target, and rows the table does not hold (cold
items). Vectors are centered with a fixed mean item vector before the cosine, as the served index centers them
(`indexer.index`), so training optimises the geometry the service searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class ItemTable:
    """Unit vectors of every item after subtracting a fixed `center` (as the served index stores them), row =
    item code; `filled` marks rows that hold a vector. User and fresh item vectors are centered the same way."""

    units: torch.Tensor
    """(n_items, d) centered unit vectors, detached."""
    filled: torch.Tensor
    """(n_items,) True where the row holds an item's vector (the training items)."""
    center: torch.Tensor
    """(d,) the mean raw item vector subtracted before normalizing."""

    @classmethod
    def empty(cls, n_items: int, center: torch.Tensor) -> ItemTable:
        center = torch.as_tensor(center, dtype=torch.float32)
        return cls(torch.zeros(n_items, len(center)), torch.zeros(n_items, dtype=torch.bool), center)

    def refill(self, codes: torch.Tensor, raw: torch.Tensor) -> None:
        """Replace the whole table by the raw vectors `raw` of the items `codes` from one model, centered on their
        own mean (as the served index of the same model will be)."""
        self.center = raw.detach().float().mean(dim=0)
        self.filled[:] = False
        self.update(codes, raw)

    def unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw model vectors -> centered unit vectors (differentiable)."""
        return F.normalize(raw - self.center.to(raw.dtype), dim=-1)

    def update(self, codes: torch.Tensor, raw: torch.Tensor) -> None:
        """Write the centered unit vectors of `raw` (detached) into the rows `codes`, keeping the center (for the
        few items missing from the base model's index at the start)."""
        self.units[codes] = self.unit(raw.detach().float())
        self.filled[codes] = True


def history_mask(histories: Sequence[Sequence[int]], n_items: int) -> torch.Tensor:
    """(len(histories), n_items) booleans: True where the item code is one of that user's items."""
    mask = torch.zeros(len(histories), n_items, dtype=torch.bool)
    for row, codes in enumerate(histories):
        if codes:
            mask[row, torch.as_tensor(list(codes), dtype=torch.long)] = True
    return mask


def table_logits(users: torch.Tensor, target_codes: torch.Tensor, table: ItemTable, owned: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """(B, n_items) logits of each user over every filled table row, centered cosine / temperature, with the
    user's other items and unfilled rows at -inf (the target row stays). users: (B, d) raw vectors with gradients;
    target_codes: (B,) item codes of filled rows; owned: (B, n_items) (`history_mask`). The loss is their
    cross-entropy with `target_codes`."""
    logits = table.unit(users) @ table.units.T.to(users.dtype)
    mask = owned | ~table.filled[None, :]
    mask[torch.arange(len(users)), target_codes] = False
    return (logits / temperature).masked_fill(mask, float("-inf"))


def draw_items(probs: torch.Tensor, warm_codes: torch.Tensor, draws: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Items whose fresh vectors carry the item side of a full softmax (`item_side_term`), drawn with replacement
    from half uniform over `warm_codes`, half the batch's mean softmax `probs` (B, n_items) (detached), and
    their importance weights (B, K): p_bj x draws of j / (draws x proposal_j), so that for any per-item g,
    sum over drawn j of w_bj g_j is an unbiased estimate of sum over all j of p_bj g_j. Returns the K distinct
    drawn codes and the weights."""
    proposal = 0.5 * probs.mean(dim=0)
    proposal[warm_codes] += 0.5 / len(warm_codes)
    drawn = torch.multinomial(proposal, draws, replacement=True, generator=generator)
    codes, counts = drawn.unique(return_counts=True)
    return codes, probs[:, codes] * counts / (draws * proposal[codes])


def item_side_term(users: torch.Tensor, targets: torch.Tensor, drawn: torch.Tensor, weights: torch.Tensor,
                   table: ItemTable, temperature: float) -> torch.Tensor:
    """A term of value 0 whose gradient with respect to the fresh item vectors is the full-softmax gradient that
    the table's detached rows do not carry: each user pulls their target's fresh vector (`targets`, (B, d)) and
    pushes every item by its softmax probability, estimated on the `drawn` items' fresh vectors (K, d) with
    `weights` (B, K) from `draw_items`. Its expected push over all items equals the pull, so moving every item
    the same way gains nothing. Users are detached here: their gradient comes from the table's logits."""
    u = table.unit(users.detach())
    pull = (u * table.unit(targets)).sum(dim=-1)
    push = ((u @ table.unit(drawn).T) * weights).sum(dim=-1)
    term = (push - pull).mean() / temperature
    return term - term.detach()
