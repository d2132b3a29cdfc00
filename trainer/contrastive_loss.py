"""The contrastive alignment loss of user and item vectors and its negative cache (DESIGN.md section 5, CL).

Softmax cross-entropy of cosine similarity / temperature between each user vector (`direct` mode) and the item
vectors, with the batch's own target as the positive. Negatives come from two blocks:
- **in-batch**: the other targets of the batch, freshly encoded (gradients flow into the item side too). They
  are drawn in proportion to popularity, so their logits get the logQ correction of Yi et al., "Sampling-Bias-
  Corrected Neural Modeling for Large Corpus Item Recommendations" (RecSys 2019): minus log of the item's
  expected count in a batch (the positive too, as in that paper);
- **cache**: a detached table of every item's vector (`NegativeCache`), overwritten row by row with each
  batch's fresh target vectors and fully re-encoded now and then by the training job, so every step sees the
  whole catalog as negatives, as a full softmax would.
Masked (never negatives): the user's own items other than the target (they are positives of that user, not
negatives), the cache row of the target itself (its fresh copy is the positive), and in-batch columns holding
the same item as the target. Vectors are centered with the cache's mean item vector before the cosine, as the
served index centers them (`indexer.index`), so training optimises the geometry the service searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class NegativeCache:
    """Raw (uncentered) vectors of every item, row = item code; `filled` marks rows that hold a vector."""

    vectors: torch.Tensor
    filled: torch.Tensor

    @classmethod
    def empty(cls, n_items: int, dim: int) -> NegativeCache:
        return cls(torch.zeros(n_items, dim), torch.zeros(n_items, dtype=torch.bool))

    def update(self, codes: torch.Tensor, vectors: torch.Tensor) -> None:
        """Overwrite the rows `codes` with `vectors` (detached)."""
        self.vectors[codes] = vectors.detach().to(self.vectors.dtype)
        self.filled[codes] = True

    def mean(self) -> torch.Tensor:
        """Mean of the filled rows: the centering vector (what the index stores as its mean)."""
        if not bool(self.filled.any()):
            return torch.zeros(self.vectors.shape[1])
        return self.vectors[self.filled].mean(dim=0)


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
    mean = cache.mean().to(users.dtype)
    u = F.normalize(users - mean, dim=-1)
    t = F.normalize(targets - mean, dim=-1)
    v = F.normalize(cache.vectors.to(users.dtype) - mean, dim=-1)
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
