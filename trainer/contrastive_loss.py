"""The contrastive alignment loss of user and item vectors and its negative cache (DESIGN.md section 5, CL).

Softmax cross-entropy of cosine similarity / temperature between each user vector (`direct` mode) and the item
vectors, with the batch's own target as the positive. Negatives come from two blocks:
- **in-batch**: the other targets of the batch, freshly encoded (gradients flow into the item side too). They
  are drawn in proportion to popularity, so their logits get the logQ correction of Yi et al., "Sampling-Bias-
  Corrected Neural Modeling for Large Corpus Item Recommendations" (RecSys 2019): minus log of the item's
  expected count in a batch (the positive too, as in that paper);
- **cache**: a detached table of every item's vector (`NegativeCache`), overwritten row by row with each
  batch's fresh target vectors and fully re-encoded and re-centered by the training job at every validation.
  Rows drift apart between re-encodings: rows written since the last one come from a newer model than the rest,
  and the model can cut the loss by telling new rows from old ones instead of learning tastes (measured on ML-1M:
  after 76 steps without any re-encoding, validation users had mean cosine .66 to rows written during training
  and -.01 to the others, and every top-10 item was such a row; with a re-encoding every 50 steps the gap still
  averaged .24 over the first 50 steps). So by default only the rows training wrote in the last `window` steps
  are negatives, as in the cross-batch memory of Wang et al., "Cross-Batch Memory for Embedding Learning" (CVPR
  2020), which holds only recent batches because their features drift little; window 0 uses every row. Rows in
  the window were drawn in proportion to popularity too, so their logits get the same kind of correction:
  minus log of the probability that the item was drawn at least once in the window's draws.
  `fresh_row_bias` measures the gap between written and older rows for the training log.
- **uniform**: popularity-drawn negatives almost never include tail items, so nothing pushes those down and a
  trained model ranks them high (measured on ML-1M after 120 steps: the median popularity rank of its top-10
  items was 1695, of the targets 510). So each step also encodes a few items drawn uniformly from the catalog as
  extra in-batch columns, with gradients, and writes them into the cache afterwards, where they stay negatives for
  the rest of the window: the mixed negative sampling of Yang et al., "Mixed Negative Sampling for Learning
  Two-tower Neural Networks in Recommendations" (WWW 2020 companion). The item side must learn from them too:
  written into the cache without gradients (only the user side learning to avoid them), 50 steps on ML-1M drove
  the top-10 median popularity rank from 1661 to 2130 and valid HR@10 from .013 to .007 on 300 users. The logQ
  correction of in-batch columns is then minus log of the item's expected count among the columns (targets plus
  uniform draws), and the window's correction covers both draws.
**Full softmax** (`table_logits`, `draw_items`, `item_side_term`): every sampled variant above left the item side
pushed by a biased set of negatives, and on ML-1M each such run peaked after 30-40 steps and then ranked tail
items first. Scoring each user against the whole table instead gives the user side the exact full-softmax
gradient, as long as the table holds one model's vectors (it is then only re-encoded, never overwritten row by
row). Item vectors in the table are detached, so their part of the gradient, (p_ij - y_ij) u_i / temperature
for every item j, goes to fresh vectors: the targets' (the pull) and those of a few items drawn from the batch's
softmax mixed with uniform, importance-weighted so the push is an unbiased estimate over all items (the proposal
distribution of sampled softmax, Bengio and Senecal, "Adaptive Importance Sampling to Accelerate Training of a
Neural Probabilistic Language Model", IEEE TNN 2008). Pull and push balance in expectation, so a drift shared by
every item vector earns nothing.
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
    written_at: torch.Tensor
    """(n_items,) the step count at which each row was last written (by `refill` or `update`)."""
    refilled_at: int = 0
    """The step count of the last `refill` (rows written after it are newer than the rest)."""

    @classmethod
    def empty(cls, n_items: int, center: torch.Tensor) -> NegativeCache:
        center = torch.as_tensor(center, dtype=torch.float32)
        return cls(torch.zeros(n_items, len(center)), torch.zeros(n_items, dtype=torch.bool), center,
                   torch.zeros(n_items, dtype=torch.long))

    def refill(self, codes: torch.Tensor, raw: torch.Tensor, step: int) -> None:
        """Replace the whole table by the raw vectors `raw` of the items `codes` from the model after `step`
        steps, centered on their own mean (as the served index of the same model will be)."""
        self.center = raw.detach().float().mean(dim=0)
        self.filled[:] = False
        self.update(codes, raw, step)
        self.refilled_at = step

    def unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw model vectors -> centered unit vectors (differentiable)."""
        return F.normalize(raw - self.center.to(raw.dtype), dim=-1)

    def update(self, codes: torch.Tensor, raw: torch.Tensor, step: int) -> None:
        """Overwrite the rows `codes` with the centered unit vectors of `raw` (detached), written at `step`."""
        self.units[codes] = self.unit(raw.detach().float())
        self.filled[codes] = True
        self.written_at[codes] = step

    @property
    def written(self) -> torch.Tensor:
        """Rows overwritten by `update` since the last `refill` (newer than the rest)."""
        return self.filled & (self.written_at > self.refilled_at)

    def negatives(self, step: int, window: int) -> torch.Tensor:
        """Rows that are negatives for the step after `step` steps: every filled row when `window` is 0, else the
        rows `update` wrote in the last `window` steps since the last refill."""
        if window == 0:
            return self.filled
        return self.written & (self.written_at > step - window)

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


def log_drawn_in_window(log_q: torch.Tensor, batch_size: int, steps: int, uniform: int = 0,
                        pool: int = 1) -> torch.Tensor:
    """log P(item in the window) from `log_q`, the log expected count per batch of targets (-inf: never a target),
    when the window holds the targets of the last `steps` batches plus `uniform` items drawn without replacement
    from a pool of `pool` items at each of those steps:
    log(1 - (1 - q)^(batch_size * steps) * (1 - uniform / pool)^steps), q = expected count / batch_size.
    Items that can be neither drawn as targets nor uniformly never enter the window; their value is not used."""
    if steps == 0:
        return torch.full_like(log_q, float("-inf"))
    q = (log_q.exp() / batch_size).clamp(max=1.0)
    log_missed = torch.log1p(-q) * batch_size * steps
    if uniform:
        log_missed = log_missed + torch.log1p(torch.tensor(-min(uniform / pool, 1.0))) * steps
    drawn = -torch.expm1(log_missed)
    return torch.log(drawn.clamp(min=1e-30))


def contrastive_loss(users: torch.Tensor, targets: torch.Tensor, target_codes: torch.Tensor, cache: NegativeCache,
                     owned: torch.Tensor, log_q: torch.Tensor | None, temperature: float,
                     cache_rows: torch.Tensor | None = None, cache_log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each user's target among in-batch and cached items (see the module docstring).

    users: (B, d) raw vectors with gradients; targets: (C, d) raw item vectors with gradients, C >= B: the first
    B are the users' own targets (the positives), the rest extra columns (uniform negatives); target_codes: (C,)
    their item codes; owned: (B, n_items) mask of each user's items (`history_mask`; the target itself may be in
    it, it is never masked as positive); log_q: (n_items,) log expected count of each item among the C columns
    of a batch (None: no correction); cache_rows: the cache
    rows that are negatives (`NegativeCache.negatives`; None: every filled row); cache_log_q: (n_items,) log
    probability that each of those rows was sampled (`log_drawn_in_window`; None: no correction).
    """
    u, t, v = cache.unit(users), cache.unit(targets), cache.units.to(users.dtype)
    batch = len(users)
    diagonal = torch.eye(batch, len(target_codes), dtype=torch.bool)

    in_batch = u @ t.T / temperature
    if log_q is not None:
        in_batch = in_batch - log_q[target_codes][None, :]
    same_item = target_codes[:batch, None] == target_codes[None, :]
    in_batch_mask = (same_item | owned[:, target_codes]) & ~diagonal

    cached = u @ v.T / temperature
    if cache_log_q is not None:
        cached = cached - cache_log_q[None, :]
    cached_mask = owned | ~(cache.filled if cache_rows is None else cache_rows)[None, :]
    cached_mask[torch.arange(batch), target_codes[:batch]] = True

    logits = torch.cat([in_batch.masked_fill(in_batch_mask, float("-inf")),
                        cached.masked_fill(cached_mask, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.arange(batch))


def table_logits(users: torch.Tensor, target_codes: torch.Tensor, cache: NegativeCache, owned: torch.Tensor,
                 temperature: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n_items) logits of each user over every filled cache row: (centered cosine + prior) / temperature,
    `prior` (n_items,) in cosine units (None: 0), with the user's other items and unfilled rows at -inf (the
    target row stays). users: (B, d) raw vectors with gradients; target_codes: (B,) item codes of filled rows;
    owned: (B, n_items) (`history_mask`)."""
    logits = cache.unit(users) @ cache.units.T.to(users.dtype)
    if prior is not None:
        logits = logits + prior[None, :].to(users.dtype)
    mask = owned | ~cache.filled[None, :]
    mask[torch.arange(len(users)), target_codes] = False
    return (logits / temperature).masked_fill(mask, float("-inf"))


def full_softmax_loss(users: torch.Tensor, target_codes: torch.Tensor, cache: NegativeCache, owned: torch.Tensor,
                      temperature: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each user's target among every filled cache row (`table_logits`), for a table that is
    exact and consistent (`ContrastiveConfig.frozen_items`, or `full_softmax` between re-encodings): nothing is
    sampled, so no logQ."""
    return F.cross_entropy(table_logits(users, target_codes, cache, owned, temperature, prior), target_codes)


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
                   cache: NegativeCache, temperature: float) -> torch.Tensor:
    """A term of value 0 whose gradient with respect to the fresh item vectors is the full-softmax gradient that
    the table's detached rows do not carry: each user pulls their target's fresh vector (`targets`, (B, d)) and
    pushes every item by its softmax probability, estimated on the `drawn` items' fresh vectors (K, d) with
    `weights` (B, K) from `draw_items`. Its expected push over all items equals the pull, so moving every item
    the same way gains nothing (the common-mode drift that sampled negatives reward). Users are detached here:
    their gradient comes from the table's logits."""
    u = cache.unit(users.detach())
    pull = (u * cache.unit(targets)).sum(dim=-1)
    push = ((u @ cache.unit(drawn).T) * weights).sum(dim=-1)
    term = (push - pull).mean() / temperature
    return term - term.detach()
