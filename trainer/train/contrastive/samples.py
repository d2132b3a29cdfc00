"""Training samples of the contrastive LoRA job (`trainer.train.contrastive.job`; docs/design.md section 5, CL):
which user, which target, which prompts. Next-item targets from each user's own training sequence, as in sequential
recommendation (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

A training user is drawn uniformly, then one of their `recent_targets` most recent training interactions is the
target; the history is everything before it, shown through the service's own user prompt (20 most recent lines,
`direct` mode). Items are shown through the item prompt with rating statistics of the training split only
(`trainer.data.splits.train_catalog`), so no held-out rating leaks in. Items without a training interaction (cold
items) are never targets.
"""

from __future__ import annotations

import numpy as np
import torch

from indexer.core.catalog import Catalog
from model.prompts import item_prompt, user_prompt
from trainer.data.datasets import Dataset, Interaction
from trainer.data.splits import Example, Split, train_catalog, training_counts
from trainer.protocol.harness import user_history


class TrainingSamples:
    """Item codes, training sequences, the target draws and the prompts of one split."""

    def __init__(self, ds: Dataset, split: Split, recent_targets: int) -> None:
        self.catalog: Catalog = ds.catalog
        self.items = train_catalog(ds.catalog, split)
        self.item_ids = ds.catalog.ids()
        self.code = {item_id: c for c, item_id in enumerate(self.item_ids)}
        self.users = sorted(u for u, h in split.train.items() if len(h) >= 2)
        self.sequences: dict[str, list[Interaction]] = {u: split.train[u] for u in self.users}
        self.owned = {u: sorted({self.code[x.item_id] for x in h}) for u, h in self.sequences.items()}
        self.warm_codes = sorted({self.code[x.item_id] for h in split.train.values() for x in h})
        self.recent = recent_targets
        counts = training_counts(self.item_ids, split)
        self.train_counts = torch.tensor([counts[item_id] for item_id in self.item_ids], dtype=torch.float32)
        """(n_items,) training interactions per item code: the counts of the `popular` ranker and of the served
        popularity prior."""

    def _positions(self, user: str) -> range:
        n = len(self.sequences[user])
        return range(max(1, n - self.recent), n)

    def batch(self, step: int, batch_size: int, seed: int) -> list[Example]:
        """The examples of training step `step` (a pure function of seed and step, so resuming is exact)."""
        rng = np.random.default_rng([seed, step])
        return [self._example(int(u), rng) for u in rng.choice(len(self.users), size=batch_size, replace=True)]

    def pool(self, size: int, batch_size: int, seed: int) -> list[list[Example]]:
        """A fixed pool of `size` examples (users in a seeded order, each once before any twice; the target drawn
        as in `batch`) cut into batches of prompts of similar length (the training job's `sample_pool`)."""
        rng = np.random.default_rng([seed, 0, 2])
        order = np.concatenate([rng.permutation(len(self.users)) for _ in range(-(-size // len(self.users)))])[:size]
        examples = [self._example(int(u), rng) for u in order]
        examples.sort(key=lambda e: len(self.user_prompt(e)))
        return [examples[first : first + batch_size] for first in range(0, len(examples), batch_size)]

    def _example(self, user_index: int, rng: np.random.Generator) -> Example:
        """User `user_index` with a target drawn by `rng` from their recent training positions."""
        user = self.users[user_index]
        positions = self._positions(user)
        t = positions[int(rng.integers(len(positions)))]
        seq = self.sequences[user]
        return Example(user, seq[:t], seq[t])

    @staticmethod
    def pool_batch(step: int, batches: int, seed: int) -> int:
        """Which pool batch step `step` trains on: each pass over the `batches` in its own seeded order."""
        return int(np.random.default_rng([seed, step // batches, 3]).permutation(batches)[step % batches])

    def user_prompt(self, example: Example) -> str:
        """The service's user prompt for `example`'s history."""
        return user_prompt(user_history(example, self.catalog).lines)

    def item_prompts(self, codes: torch.Tensor) -> list[str]:
        """The item prompts (training-split statistics) of the item codes `codes`."""
        return [item_prompt(self.items[self.item_ids[int(c)]]) for c in codes]
