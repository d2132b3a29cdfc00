"""Training samples of the contrastive LoRA job (`trainer.contrastive`; DESIGN.md section 5, CL): which user,
which target, which prompts, and how often each item is drawn (for the logQ correction of Yi et al., RecSys 2019).

A training user is drawn uniformly, then one of their `recent_targets` most recent training interactions is the
target; the history is everything before it, shown through the service's own user prompt (20 most recent lines,
ages relative to the target's time, `direct` mode). Items are shown through the item prompt with rating
statistics of the training split only (`trainer.splits.train_catalog`), so no held-out rating leaks in. Items
without a training interaction (cold items) are never targets; `item_prompts` can drop the rating line so that a
training item reads like one (DropoutNet's input dropout, Volkovs et al., NeurIPS 2017).
"""

from __future__ import annotations

import numpy as np
import torch

from indexer.catalog import Catalog
from model.prompts import item_prompt
from trainer.data import Dataset, Interaction
from trainer.llm_rankers import example_prompt
from trainer.rankers import PopularityRanker
from trainer.splits import Example, Split, train_catalog


class TrainingSamples:
    """Item codes, training sequences, the target distribution and the prompts of one split."""

    def __init__(self, ds: Dataset, split: Split, recent_targets: int, batch_size: int) -> None:
        self.catalog: Catalog = ds.catalog
        self.items = train_catalog(ds.catalog, split)
        self.item_ids = ds.catalog.ids()
        self.code = {item_id: c for c, item_id in enumerate(self.item_ids)}
        self.users = sorted(u for u, h in split.train.items() if len(h) >= 2)
        self.sequences: dict[str, list[Interaction]] = {u: split.train[u] for u in self.users}
        self.owned = {u: sorted({self.code[x.item_id] for x in h}) for u, h in self.sequences.items()}
        self.warm_codes = sorted({self.code[x.item_id] for h in split.train.values() for x in h})
        self.recent = recent_targets
        self.log_q = self._log_expected_counts(batch_size)
        self.train_counts = torch.as_tensor(PopularityRanker(self.item_ids, split.train).row, dtype=torch.float32)
        """(n_items,) training interactions per item code: the counts of the `popular` ranker and of the served
        popularity prior."""

    def _log_expected_counts(self, batch_size: int) -> torch.Tensor:
        """log of each item's expected number of appearances as a target in one batch (-inf where never drawn)."""
        counts = np.zeros(len(self.item_ids))
        for user in self.users:
            positions = self._positions(user)
            for t in positions:
                counts[self.code[self.sequences[user][t].item_id]] += 1.0 / len(positions)
        expected = counts * batch_size / len(self.users)
        with np.errstate(divide="ignore"):
            return torch.as_tensor(np.log(expected), dtype=torch.float32)

    def log_q_with_uniform(self, uniform: int) -> torch.Tensor:
        """log of each item's expected count among a batch's columns when `uniform` warm items drawn uniformly
        join its targets (mixed negative sampling): log(expected target count + uniform / warm items)."""
        expected = self.log_q.exp()
        expected[self.warm_codes] += min(uniform, len(self.warm_codes)) / len(self.warm_codes)
        return expected.log()

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

    def positives(self, example: Example, count: int) -> list[int]:
        """Item codes of `example`'s target and of up to `count - 1` items that follow it in the user's training
        sequence (`ContrastiveConfig.positives`). `example` comes from `batch` or `pool`, so its history is the
        whole training prefix before the target."""
        start = len(example.history)
        return [self.code[x.item_id] for x in self.sequences[example.user_id][start : start + count]]

    def item_pairs(self, step: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` (item, next item) code pairs for training step `step`, consecutive in a training sequence: a
        user drawn uniformly, then a target position as in `batch` and the item before it (`item_pairs` of
        `ContrastiveConfig`; a pure function of seed and step, like `batch`)."""
        rng = np.random.default_rng([seed, step, 5])
        examples = [self._example(int(u), rng) for u in rng.choice(len(self.users), size=count, replace=True)]
        return (torch.tensor([self.code[e.history[-1].item_id] for e in examples], dtype=torch.long),
                torch.tensor([self.code[e.target.item_id] for e in examples], dtype=torch.long))

    @staticmethod
    def pool_batch(step: int, batches: int, seed: int) -> int:
        """Which pool batch step `step` trains on: each pass over the `batches` in its own seeded order."""
        return int(np.random.default_rng([seed, step // batches, 3]).permutation(batches)[step % batches])

    def uniform_items(self, step: int, count: int, seed: int) -> torch.Tensor:
        """`count` distinct warm item codes drawn uniformly for training step `step` (pure function of seed and
        step, like `batch`)."""
        rng = np.random.default_rng([seed, step, 1])
        drawn = rng.choice(len(self.warm_codes), size=min(count, len(self.warm_codes)), replace=False)
        return torch.as_tensor(np.asarray(self.warm_codes)[drawn], dtype=torch.long)

    def user_prompt(self, example: Example) -> str:
        return example_prompt(example, self.catalog)

    def item_prompts(self, codes: torch.Tensor, stats_dropout: float, step: int, seed: int) -> list[str]:
        """The prompts of training step `step`'s items `codes`, each written without its rating line (no average,
        no count: how a cold item's prompt reads) with probability `stats_dropout` (a pure function of seed and
        step, like `batch`)."""
        dropped = np.random.default_rng([seed, step, 4]).random(len(codes)) < stats_dropout
        items = [self.items[self.item_ids[int(c)]] for c in codes]
        return [item_prompt(item.without_ratings() if drop else item)
                for item, drop in zip(items, dropped, strict=True)]
