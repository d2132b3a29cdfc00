"""Rating prediction with a structured chain of thought (RecZero, "Think before Recommendation").

The small default model does not follow the four-tag format on its own (docs/design.md section 2), so the structure
is guided: each tag is opened by us, the model writes its content until it closes the tag (or a per-tag budget
ends and we close it), and after `<rate>` the rating is read from the model's next-token probabilities over
`1`..`5`: the expected value is the rating, the argmax is the integer written into `<rate>`. Every guided
answer therefore parses. `parse_rating_output` checks free-form text against the same format (used for engines
that cannot be guided, and as the format reward of GRPO).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.engines.base import Engine
from model.prompts import RATING_TAGS

RATING_CHOICES = ("1", "2", "3", "4", "5")
_FORMAT = re.compile(
    r"^\s*<analyze user>(?P<user>.+?)</analyze user>\s*<analyze item>(?P<item>.+?)</analyze item>\s*"
    r"<match>(?P<match>.+?)</match>\s*<rate>\s*(?P<rate>[1-5])\s*</rate>\s*$",
    re.DOTALL,
)
_RATE_ONLY = re.compile(r"<rate>\s*([1-5](?:\.\d+)?)\s*</rate>")


@dataclass(frozen=True)
class RatingPrediction:
    rating: float
    """Expected rating under the model's distribution over 1..5."""
    probabilities: tuple[float, ...]
    """P(1..5) after `<rate>`, renormalized over the five digits."""
    text: str
    """The full assistant answer, tags included (for `direct`, just `<rate>N</rate>`)."""
    generated_tokens: int


def predict_ratings(
    engine: Engine, prompts: Sequence[str], reasoning: bool = True, max_tokens_per_tag: int = 32
) -> list[RatingPrediction]:
    """Guided rating for a batch of rating prompts (`rating_prompt` or `direct_rating_prompt` text)."""
    answers = [""] * len(prompts)
    tokens = [0] * len(prompts)
    if reasoning:
        for tag in RATING_TAGS[:-1]:
            answers = [a + f"<{tag}>" for a in answers]
            outs = engine.generate(prompts, answers, max_tokens_per_tag, stop=f"</{tag}>")
            answers = [a + tag_content(o.text) + f"</{tag}>\n" for a, o in zip(answers, outs, strict=False)]
            tokens = [t + o.generated_tokens for t, o in zip(tokens, outs, strict=False)]
    answers = [a + "<rate>" for a in answers]
    probs = engine.choice_probs(prompts, answers, RATING_CHOICES)
    values = np.arange(1, len(RATING_CHOICES) + 1, dtype=np.float64)
    return [
        RatingPrediction(
            rating=float(p @ values),
            probabilities=tuple(float(x) for x in p),
            text=f"{a}{int(np.argmax(p)) + 1}</rate>",
            generated_tokens=t,
        )
        for a, p, t in zip(answers, probs, tokens, strict=False)
    ]


def tag_content(generated: str) -> str:
    """What the model wrote inside a tag, cut at the first `<` (the small model writes later tags early, or
    misspelled closing tags), never empty, so the guided answer always has the four-tag format."""
    return generated.split("<", 1)[0].strip() or "-"


def parse_rating_output(text: str, require_reasoning: bool = True) -> int | None:
    """The integer rating if `text` follows the format (all four tags once, in order, non-empty), else None."""
    if require_reasoning:
        match = _FORMAT.match(text)
        if match is None or any(not match.group(g).strip() for g in ("user", "item", "match")):
            return None
        if any(text.count(f"<{tag}>") != 1 for tag in RATING_TAGS):
            return None
        return int(match.group("rate"))
    found = _RATE_ONLY.findall(text)
    return int(float(found[-1])) if len(found) == 1 and float(found[-1]).is_integer() else None
