"""The language model as the user (seed 001: "Selecting User Histories to Generate LLM Users for Cold-Start Item
Recommendation", arXiv 2511.21989): given a user's history and two items, which one the user would rather watch.

The preference is read from the answer token's probabilities (`Engine.choice_probs` over "A" and "B" after
`model.prompts.preference_prompt`), not from a sampled text, and each pair is asked in both orders and averaged,
so that the model's leaning towards one letter cancels: `p = (P(A | first, second) + P(B | second, first)) / 2` is
the probability that the user prefers the first item. The prompts of one user share everything before the
choices, which the fast engine computes once (its held prefix).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.core.catalog import Item
from model.engines.base import Engine
from model.prompts import PREFERENCE_CHOICES, HistoryLine, preference_prompt


def prefer_first(engine: Engine, history: Sequence[HistoryLine], pairs: Sequence[tuple[Item, Item]]) -> np.ndarray:
    """(len(pairs),) the probability, by the model as this user, that the first item of each pair is preferred."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    prompts = [prompt for first, second in pairs
               for prompt in (preference_prompt(history, first, second), preference_prompt(history, second, first))]
    probs = engine.choice_probs(prompts, [""] * len(prompts), PREFERENCE_CHOICES)
    return ((probs[0::2, 0] + probs[1::2, 1]) / 2).astype(np.float32)
