"""Rating prediction evaluation (docs/design.md section 6): the LLM's guided `direct` and `reasoning` (RecZero
four-tag chain of thought, "Think before Recommendation") modes of `model.rating.predict_ratings` against the
global-mean, user-mean and item-mean baselines, on the true ratings of the leave-one-out test targets.

The means come from the training interactions only, and the rating prompt shows the item's average from the
training split (`trainer.data.splits.train_catalog`), so no prompt carries the rating being predicted. The LLM
modes run on fixed, seeded user samples; the baselines run on every test target and on those samples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.core.catalog import Catalog
from model.engines.base import Engine
from model.prompts import direct_rating_prompt, rating_prompt
from model.rankers.llm import LLM_MODES
from model.rating.guided import predict_ratings
from trainer.batch_cache import BatchCache
from trainer.data.datasets import Interaction
from trainer.data.splits import Example
from trainer.protocol.harness import user_history
from trainer.protocol.metrics import rating_summary


def rated(examples: Sequence[Example]) -> list[Example]:
    """The examples whose target carries a rating."""
    return [e for e in examples if e.target.rating is not None]


def baseline_predictions(examples: Sequence[Example], train: dict[str, list[Interaction]]) -> dict[str, np.ndarray]:
    """Global, user and item mean of the training ratings (user/item fall back to the global mean)."""
    ratings = [x for history in train.values() for x in history if x.rating is not None]
    global_mean = float(np.mean([x.rating for x in ratings]))
    by_item: dict[str, list[float]] = defaultdict(list)
    for x in ratings:
        by_item[x.item_id].append(x.rating)
    user_mean = {u: float(np.mean(r)) for u, h in train.items() if (r := [x.rating for x in h if x.rating is not None])}
    item_mean = {i: float(np.mean(r)) for i, r in by_item.items()}
    return {
        "global-mean": np.full(len(examples), global_mean),
        "user-mean": np.array([user_mean.get(e.user_id, global_mean) for e in examples]),
        "item-mean": np.array([item_mean.get(e.target.item_id, global_mean) for e in examples]),
    }


def llm_predictions(engine: Engine, examples: Sequence[Example], catalog: Catalog, mode: str,
                    cache_dir: Path | None = None, batch_size: int = 8, max_tokens_per_tag: int = 32
                    ) -> tuple[np.ndarray, BatchCache]:
    """Expected ratings (probability-weighted over 1..5) of the guided `mode` for each example, and the cache
    (its hit/miss counts say how many batches were computed); `catalog` should hold training-split statistics."""
    if mode not in LLM_MODES:
        raise ValueError(f"rating mode must be one of {', '.join(LLM_MODES)}, got {mode!r}")
    template = rating_prompt if mode == "reasoning" else direct_rating_prompt
    cache = BatchCache(cache_dir, {"rating": mode, "fingerprint": engine.fingerprint.to_json(),
                                   "max_tokens_per_tag": max_tokens_per_tag})

    def predict(prompts: list[str]) -> np.ndarray:
        out = predict_ratings(engine, prompts, reasoning=mode == "reasoning", max_tokens_per_tag=max_tokens_per_tag)
        return np.array([p.rating for p in out])

    predictions = []
    for first in tqdm(range(0, len(examples), batch_size), desc=f"rating ({mode})", unit="batch"):
        batch = examples[first : first + batch_size]
        prompts = [template(user_history(e, catalog).lines, catalog[e.target.item_id])
                   for e in batch]
        predictions.append(cache.get_or_compute(prompts, predict))
    return (np.concatenate(predictions) if predictions else np.zeros(0)), cache


def summarize(predictions: np.ndarray, examples: Sequence[Example], n_resamples: int, seed: int) -> dict:
    true = np.array([e.target.rating for e in examples])
    return {"users": len(examples), **rating_summary(predictions, true, n_resamples, seed)}
