"""The contrastive alignment loss of user and item vectors and its negative cache (DESIGN.md section 5, CL).

Softmax cross-entropy of cosine similarity / temperature between each user vector (`direct` mode) and the item
vectors, with the batch's own target as the positive. Negatives come from two blocks:
- **in-batch**: the other targets of the batch, freshly encoded (gradients flow into the item side too). They
  are drawn in proportion to popularity, so their logits get the logQ correction of Yi et al., "Sampling-Bias-
  Corrected Neural Modeling for Large Corpus Item Recommendations" (RecSys 2019): minus log of the item's
  expected count in a batch (the positive too, as in that paper);
- **cache**: a detached table of every item's vector (`NegativeCache`), overwritten row by row with each
  batch's fresh target vectors and fully re-encoded and re-centered by the training job at every validation,
  so every step sees the whole catalog as negatives, as a full softmax would. Rows drift apart between
  re-encodings: rows written since the last one come from a newer model than the rest, and the model can cut
  the loss by telling new rows from old ones instead of learning tastes (measured on ML-1M: after 76 steps
  without any re-encoding, validation users had mean cosine .66 to rows written during training and -.01 to the
  others, and every top-10 item was such a row). `fresh_row_bias` measures that gap for the training log.
Masked (never negatives): the user's own items other than the target (they are positives of that user, not
negatives), the cache row of the target itself (its fresh copy is the positive), and in-batch columns holding
the same item as the target. Vectors are centered with a fixed mean item vector before the cosine, as the served
index centers them (`indexer.index`), so training optimises the geometry the service searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class NegativeCache:
    """Unit vectors of every item after subtracting a fixed `center` (as the served index stores them), row =
    item code; `filled` marks rows that hold a vector. User and fresh item vectors are centered the same way."""

    units: torch.Tensor
    filled: torch.Tensor
    center: torch.Tensor
    written: torch.Tensor
    """Rows overwritten by `update` since the last `refill` (newer than the rest)."""

    @classmethod
    def empty(cls, n_items: int, center: torch.Tensor) -> NegativeCache:
        center = torch.as_tensor(center, dtype=torch.float32)
        return cls(torch.zeros(n_items, len(center)), torch.zeros(n_items, dtype=torch.bool), center,
                   torch.zeros(n_items, dtype=torch.bool))

    def refill(self, codes: torch.Tensor, raw: torch.Tensor) -> None:
        """Replace the whole table by the raw vectors `raw` of the items `codes`, centered on their own mean (as the
        served index of the same model will be)."""
        self.center = raw.detach().float().mean(dim=0)
        self.filled[:] = False
        self.update(codes, raw)
        self.written[:] = False

    def unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw model vectors -> centered unit vectors (differentiable)."""
        return F.normalize(raw - self.center.to(raw.dtype), dim=-1)

    def update(self, codes: torch.Tensor, raw: torch.Tensor) -> None:
        """Overwrite the rows `codes` with the centered unit vectors of `raw` (detached)."""
        self.units[codes] = self.unit(raw.detach().float())
        self.filled[codes] = True
        self.written[codes] = True

    def fresh_row_bias(self, users: torch.Tensor) -> float | None:
        """Mean cosine of the raw `users` to rows written since the last refill minus that to the other filled
        rows (None while either group is empty): near 0 when the table is consistent, large when it is not."""
        older = self.filled & ~self.written
        if not self.written.any() or not older.any():
            return None
        cosines = self.unit(users.detach().float()) @ self.units.T
        return float(cosines[:, self.written].mean() - cosines[:, older].mean())


def history_mask(histories: Sequence[Sequence[int]], n_items: int) -> torch.Tensor:
    """(len(histories), n_items) booleans: True where the item code is one of that user's items."""
    mask = torch.zeros(len(histories), n_items, dtype=torch.bool)
    for row, codes in enumerate(histories):
        if codes:
            mask[row, torch.as_tensor(list(codes), dtype=torch.long)] = True
    return mask


def contrastive_loss(users: torch.Tensor, targets: torch.Tensor, target_codes: torch.Tensor, cache: NegativeCache,
                     owned: torch.Tensor, log_q: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of each user's target among in-batch and cached items (see the module docstring).

    users, targets: (B, d) raw vectors with gradients; target_codes: (B,) item codes; owned: (B, n_items) mask
    of each user's items (`history_mask`; the target itself may be in it, it is never masked as positive);
    log_q: (n_items,) log expected count of each item in a batch (None: no correction).
    """
    u, t, v = cache.unit(users), cache.unit(targets), cache.units.to(users.dtype)
    batch = len(target_codes)
    diagonal = torch.eye(batch, dtype=torch.bool)

    in_batch = u @ t.T / temperature
    if log_q is not None:
        in_batch = in_batch - log_q[target_codes][None, :]
    same_item = target_codes[:, None] == target_codes[None, :]
    in_batch_mask = (same_item | owned[:, target_codes]) & ~diagonal

    cached = u @ v.T / temperature
    cached_mask = owned | ~cache.filled[None, :]
    cached_mask[torch.arange(batch), target_codes] = True

    logits = torch.cat([in_batch.masked_fill(in_batch_mask, float("-inf")),
                        cached.masked_fill(cached_mask, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.arange(batch))
