"""Training windows of reasoning SFT (`trainer.train.reasoning_sft`): which users, which cut points, which texts.

From the training split only. Users are drawn without replacement in a seeded order; for each, a window end is
drawn among their `recent` most recent training positions, the window is the (at most) `MAX_HISTORY_LINES` training
interactions before it, and `cuts` cut points are drawn among the window's line counts of at least `min_lines`,
always including the whole window (the shape of a served prompt). Cut k's example is the history of the window's
first k lines and the interaction right after them as the next item; its assistant text is the generator's
rationale (`trainer.reasoning.rationales`) + `<answer>`. Everything is a function of the seed, so a resumed run
rebuilds the same pool. Next-item targets from each user's own sequence, as in sequential recommendation (Kang and
McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018); rationales as R2ec's reasoning supervision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.prompts import MAX_HISTORY_LINES
from trainer.data.datasets import Dataset
from trainer.data.splits import Example, Split
from trainer.protocol.harness import user_history
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.packing import WindowSample
from trainer.reasoning.rationales import MAX_RATIONALE_TOKENS, rationale_for


def window_examples(split: Split, windows: int, cuts: int, min_lines: int, recent: int, seed: int
                    ) -> list[list[Example]]:
    """Per window, its cut examples (oldest cut first; every example's history is a prefix of the window)."""
    users = sorted(u for u, h in split.train.items() if len(h) > min_lines)
    rng = np.random.default_rng([seed, 27])
    out = []
    for u in rng.permutation(len(users))[:windows]:
        seq = split.train[users[int(u)]]
        end = int(rng.integers(max(min_lines, len(seq) - recent), len(seq)))  # the last cut's next item
        start = max(0, end - MAX_HISTORY_LINES)
        lengths = list(range(min_lines, end - start))
        picked = sorted({end - start, *rng.choice(lengths, size=min(cuts - 1, len(lengths)), replace=False).tolist()})
        out.append([Example(users[int(u)], seq[start : start + k], seq[start + k]) for k in picked])
    return out


def window_pool(ds: Dataset, split: Split, context: ReasoningContext, windows: int, cuts: int, min_lines: int,
                recent: int, seed: int, count_tokens: Callable[[str], int] | None = None,
                max_tokens: int = MAX_RATIONALE_TOKENS) -> list[WindowSample]:
    """The SFT pool: one `WindowSample` per window of `window_examples`, texts = rationale + `<answer>`."""
    pool = []
    for examples in window_examples(split, windows, cuts, min_lines, recent, seed):
        whole = user_history(examples[-1], ds.catalog).lines
        texts = tuple(rationale_for(e, context, seed, count_tokens, max_tokens).assistant_text for e in examples)
        pool.append(WindowSample(whole, tuple(len(e.history) for e in examples), texts))
    return pool
