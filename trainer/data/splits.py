"""Evaluation protocols over a `trainer.data.datasets.Dataset` (docs/design.md section 6): leave-one-out, a global
chronological cut and a cold-item split, as deterministic pure functions of the dataset (and a seed).

Every split gives `train` (per-user interactions a model may learn from) and evaluation `Example`s: a target
interaction and the history a ranker may use as context for it. Context is not training data: a test example
may show interactions (such as the validation target) that `train` leaves out. In every split a target's
item never appears in its own history (the loaders keep one interaction per user and item), and examples
whose history would be empty are dropped, because the service refuses an empty history.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from indexer.core.catalog import Catalog
from trainer.data.datasets import Dataset, Interaction, with_item_stats


@dataclass
class Example:
    """Predict `target` for `user_id` given `history` (oldest first, everything before the target that the
    split allows as context)."""

    user_id: str
    history: list[Interaction]
    target: Interaction


@dataclass
class Split:
    """Training interactions per user and the validation and test examples (at most one each per user,
    except in `ColdSplit`, see there). `protocol` names the split and its parameters for reports."""

    protocol: str
    train: dict[str, list[Interaction]]
    valid: list[Example]
    test: list[Example]


@dataclass
class ColdSplit(Split):
    """A split with held-out cold items. `valid`/`test` are "all" (cold + warm examples); the parts are in
    `valid_cold`, `valid_warm`, `test_cold` and `test_warm`, so a user may have one example in each part."""

    cold_items: set[str]
    valid_items: set[str]
    test_items: set[str]
    valid_cold: list[Example]
    valid_warm: list[Example]
    test_cold: list[Example]
    test_warm: list[Example]


def _leave_one_out(histories: dict[str, list[Interaction]]) -> tuple[
        dict[str, list[Interaction]], list[Example], list[Example]]:
    """Users with at least 3 interactions: last -> test, second-last -> valid, the rest -> train; the test
    history includes the valid target. Users with fewer stay in train only, with nothing held out."""
    train: dict[str, list[Interaction]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    for user, history in histories.items():
        if len(history) < 3:
            train[user] = list(history)
            continue
        train[user] = history[:-2]
        valid.append(Example(user, history[:-2], history[-2]))
        test.append(Example(user, history[:-1], history[-1]))
    return train, valid, test


def leave_one_out(ds: Dataset) -> Split:
    """The usual sequential-recommendation protocol (SASRec, docs/design.md anchors): per user, chronologically,
    the last interaction is the test target, the second-last the validation target, the rest is training."""
    train, valid, test = _leave_one_out(ds.histories)
    return Split("leave-one-out", train, valid, test)


def _time_cut(times: Sequence[int], frac_after: float) -> float:
    """The first timestamp of the last `frac_after` of the sorted `times` (inf when that share is empty).
    Interactions at the cut second all fall after it, so the share after can be slightly larger."""
    n_after = round(len(times) * frac_after)
    return times[len(times) - n_after] if n_after else math.inf


def _first_in_window(user: str, history: list[Interaction], start: float, end: float) -> list[Example]:
    """[] or [the example whose target is the user's first interaction with start <= timestamp < end and
    whose history is everything before it]; [] also when that history would be empty."""
    for i, interaction in enumerate(history):
        if start <= interaction.timestamp < end:
            return [Example(user, history[:i], interaction)] if i else []
    return []


def chronological(ds: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """A global time cut (no look-ahead across users): with all interactions sorted by time, the last
    `test_frac` of them form the test window and the `valid_frac` before it the validation window; train is
    everything before the validation window. Each user contributes at most one example per window: their
    first interaction in it, with their full earlier history (train and, for test, validation-window
    interactions) as context, so heavy users are not over-weighted. Targets may be items first seen after
    the cut; evaluation code decides whether to rank them."""
    if valid_frac < 0 or test_frac <= 0 or valid_frac + test_frac >= 1:
        raise ValueError(f"chronological: need valid_frac >= 0, test_frac > 0 and valid_frac + test_frac < 1; "
                         f"got valid_frac={valid_frac}, test_frac={test_frac}")
    times = sorted(x.timestamp for history in ds.histories.values() for x in history if x.timestamp is not None)
    if len(times) != ds.n_interactions:
        raise ValueError(f"chronological: dataset {ds.name!r} has interactions without a timestamp")
    test_cut = _time_cut(times, test_frac)
    valid_cut = min(_time_cut(times, valid_frac + test_frac), test_cut)
    train: dict[str, list[Interaction]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    for user, history in ds.histories.items():
        before = [x for x in history if x.timestamp < valid_cut]
        if before:
            train[user] = before
        valid += _first_in_window(user, history, valid_cut, test_cut)
        test += _first_in_window(user, history, test_cut, math.inf)
    return Split(f"chronological(valid_frac={valid_frac}, test_frac={test_frac})", train, valid, test)


def _first_cold_examples(histories: dict[str, list[Interaction]], part_items: set[str],
                         cold_items: set[str]) -> list[Example]:
    """Per user, the first interaction with an item of `part_items` that has at least one warm interaction
    before it; history = those earlier warm interactions (every cold item removed). Only the first, so users
    with many cold interactions do not outweigh the others."""
    examples = []
    for user, history in histories.items():
        for i, interaction in enumerate(history):
            if interaction.item_id in part_items:
                context = [x for x in history[:i] if x.item_id not in cold_items]
                if context:
                    examples.append(Example(user, context, interaction))
                    break
    return examples


def cold_items(ds: Dataset, cold_frac: float = 0.2, seed: int = 0) -> ColdSplit:
    """Hold out `cold_frac` of the items that have interactions (seeded sample of the sorted ids) as cold:
    no interaction with any cold item is in train or in any history. The cold items are split by item, half
    for validation and the rest for test (`_first_cold_examples` gives the cold examples). Warm examples are
    leave-one-out on the warm-only histories, whose remainder is train."""
    if not 0 < cold_frac < 1:
        raise ValueError(f"cold_items: cold_frac must be in (0, 1), got {cold_frac}")
    rated = sorted({x.item_id for history in ds.histories.values() for x in history})
    cold = random.Random(seed).sample(rated, round(cold_frac * len(rated)))
    if len(cold) < 2:
        raise ValueError(f"cold_items: cold_frac={cold_frac} of {len(rated)} rated items leaves fewer than 2 "
                         "cold items, one for validation and one for test")
    cold_set, valid_items, test_items = set(cold), set(cold[: len(cold) // 2]), set(cold[len(cold) // 2:])
    warm_histories = {user: warm for user, history in ds.histories.items()
                      if (warm := [x for x in history if x.item_id not in cold_set])}
    train, valid_warm, test_warm = _leave_one_out(warm_histories)
    valid_cold = _first_cold_examples(ds.histories, valid_items, cold_set)
    test_cold = _first_cold_examples(ds.histories, test_items, cold_set)
    return ColdSplit(f"cold-items(cold_frac={cold_frac}, seed={seed})", train, valid_cold + valid_warm,
                     test_cold + test_warm, cold_set, valid_items, test_items,
                     valid_cold, valid_warm, test_cold, test_warm)


def train_catalog(catalog: Catalog, split: Split) -> Catalog:
    """`catalog` with `avg_rating`/`rating_count` recomputed from `split.train` only, so item prompts do not
    leak held-out ratings; cold items come out with no ratings, as a brand-new item would."""
    return with_item_stats(catalog, split.train)


def sample_examples(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """A fixed, seeded sample of `n` examples (all of them if there are fewer). The examples are sorted by
    user id (then target item, unique per user within a list) first, and the sample keeps that order, so it
    depends only on the set of examples, `n` and `seed`, never on the order they came in."""
    if n < 0:
        raise ValueError(f"sample_examples: n must be >= 0, got {n}")
    ordered = sorted(examples, key=lambda example: (example.user_id, example.target.item_id))
    picks = sorted(random.Random(seed).sample(range(len(ordered)), min(n, len(ordered))))
    return [ordered[i] for i in picks]


def training_counts(candidates: Sequence[str], split: Split) -> dict[str, int]:
    """Each candidate's number of training interactions (0 for an item never seen in training)."""
    counts = Counter(x.item_id for history in split.train.values() for x in history)
    return {item_id: counts.get(item_id, 0) for item_id in candidates}
