"""Grounded rationales written by a program: for a cut point (a history and the item that came next), a short
analysis that is true of the history, a hindsight conclusion about the next item, then `<answer>`.

What a rationale says, in this order (the middle sentences shuffled, each phrased by one of several templates of
`model.claims`, all choices drawn from a generator seeded per example):
1. the dominant genre or two of the window ("Mostly Drama and Comedy");
2. the dominant decade(s); the rating(s) the user gives most often; the genre the last `RECENT` entries lean to;
3. a conclusion in words a model could have predicted: the next item's genre (of its genres, the one most present
   among the recent entries, then in the window) and its decade ("Next: likely a 1990s Thriller"), true of the next
   item by construction (hindsight, what the SFT teaches); or, for states that must look like those after the
   model's own reasoning, the forecast a reader of the window alone would make (`forecast`).
Only what the prompt's lines show (titles with years, genres, ratings) and no numbers to compute (shares, means):
everything is checked by `trainer.reasoning.checker` with the same facts (`trainer.reasoning.facts`), and the tests
check that every claim written passes. A token budget (`MAX_RATIONALE_TOKENS`, the marker included) is met by
dropping optional parts in a fixed order, so the served reasoning budget (about 48 tokens) fits. This is the
supervision of the reasoning SFT (`reasonrec train-reasoning`), standing in for the teacher model of R2ec ("Towards
Large Recommender Models with Reasoning").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from indexer.core.catalog import Item
from model.claims import Claim, Prediction, decade_of, parse, render
from model.prompts import ANSWER_MARKER
from trainer.data.splits import Example
from trainer.reasoning.facts import HistoryFacts, ReasoningContext

MAX_RATIONALE_TOKENS = 42
"""Tokens of rationale + `<answer>` the generator keeps within when it is given a token counter (the served budget,
`service.settings.Settings.default_reasoning_tokens`, is 48: room for a model that writes a little longer)."""
_DRAWS = 4
"""Template draws tried for one set of parts before an optional part is dropped."""

_DROP_FIRST = ("decade_2", "rating_2", "genre_2")
"""Optional parts dropped first while the rationale is over its token budget; then whole sentences of
`_DROP_LATER`, in an order drawn per example (so rationales differ in what they keep)."""
_DROP_LATER = ("recent", "decades", "ratings")


@dataclass(frozen=True)
class Rationale:
    """A written rationale: its text (no marker), the claims it makes and its prediction."""

    text: str
    claims: tuple[Claim, ...]
    prediction: Prediction | None

    @property
    def assistant_text(self) -> str:
        """What the assistant turn holds in training: the rationale, then `<answer>`."""
        return self.text + ANSWER_MARKER


class _Parts:
    """The optional and required pieces of one rationale, each as (template kind, slot values)."""

    def __init__(self, facts: HistoryFacts, target: Item | None, rng: random.Random, hindsight: bool) -> None:
        self.facts = facts
        self.genres = facts.top_genres[: 1 + (rng.random() < 0.6)]
        self.decades = facts.top_decades[: 1 + (rng.random() < 0.3)]
        self.recent = facts.recent_genres[0] if facts.recent_genres else None
        self.ratings = facts.top_ratings[:2]
        self.prediction = self._prediction(target) if hindsight else forecast(facts)

    def _prediction(self, target: Item | None) -> dict[str, object] | None:
        if target is None or not target.genres:
            return None
        recent = self.facts.genre_counts(self.facts.recent)
        genre = max(target.genres, key=lambda g: (recent[g], self.facts.genre_share(g), -target.genres.index(g)))
        return _conclusion(genre, decade_of(target.year))

    def drop(self, part: str) -> bool:
        """Remove one optional part; False when there was nothing to remove."""
        lists = {"decade_2": (self.decades, 1), "rating_2": (self.ratings, 1), "genre_2": (self.genres, 1),
                 "decades": (self.decades, 0), "ratings": (self.ratings, 0)}
        if part in lists:
            values, keep = lists[part]
            if len(values) <= keep:
                return False
            del values[keep:]
            return True
        present = self.recent is not None
        self.recent = None
        return present

    def sentences(self, order: list[str], rng: random.Random) -> list[str]:
        middle: dict[str, tuple[str, dict[str, object]] | None] = {
            "decades": ("decades", {f"d{i}": d for i, d in enumerate(self.decades)}) if self.decades else None,
            "ratings": ("rating", {f"r{i}": r for i, r in enumerate(self.ratings)}) if self.ratings else None,
            "recent": ("recent", {"g0": self.recent}) if self.recent else None,
        }
        parts = [("genres", {f"g{i}": g for i, g in enumerate(self.genres)})] if self.genres else []
        parts += [part for name in order if (part := middle[name]) is not None]
        parts += [("prediction", self.prediction)] if self.prediction else []
        return [render(kind, values, rng) for kind, values in parts]


def _conclusion(genre: str, decade: int | None) -> dict[str, object]:
    """The prediction's template slots (the decade left out when unknown)."""
    return {"g0": genre} if decade is None else {"g0": genre, "d0": decade}


def forecast(facts: HistoryFacts) -> dict[str, object] | None:
    """The conclusion drawn from the window alone: the genre the recent entries lean to (else the dominant one) and
    the dominant decade (template slots, as `_Parts` holds its parts)."""
    genres = facts.recent_genres or facts.top_genres
    if not genres:
        return None
    return _conclusion(genres[0], facts.top_decades[0] if facts.top_decades else None)


def write_rationale(facts: HistoryFacts, target: Item | None, rng: random.Random,
                    count_tokens: Callable[[str], int] | None = None,
                    max_tokens: int = MAX_RATIONALE_TOKENS, hindsight: bool = True) -> Rationale:
    """A rationale of the window `facts` describes, concluding on `target` (the next item; None: no conclusion), or
    with `hindsight=False` on the window's `forecast`. With `count_tokens` (text -> tokens) optional parts are
    dropped until rationale + `<answer>` fits `max_tokens` (the dominant genre and the conclusion always stay)."""
    parts = _Parts(facts, target, rng, hindsight)
    order = ["decades", "ratings", "recent"]
    rng.shuffle(order)
    later = list(_DROP_LATER)
    rng.shuffle(later)
    state = rng.getstate()
    drops = iter(_DROP_FIRST + tuple(later))
    while True:
        rng.setstate(state)  # the same template draws for what is left after a drop
        texts = [". ".join(parts.sentences(order, rng)) + "." for _ in range(_DRAWS if count_tokens else 1)]
        fitting = [t for t in texts if count_tokens is None or count_tokens(t + ANSWER_MARKER) <= max_tokens]
        if fitting:
            text = fitting[0]
            break
        if not any(parts.drop(part) for part in drops):
            text = min(texts, key=len)
            break
    parsed = parse(text)
    return Rationale(text, parsed.claims, parsed.prediction)


def example_facts(example: Example, context: ReasoningContext) -> HistoryFacts:
    """The facts of the window the user prompt of `example` shows."""
    return context.facts([x.item_id for x in example.history], [x.rating for x in example.history])


def example_rng(example: Example, seed: int) -> random.Random:
    """The generator of one example's phrasing: a function of the seed, the user and the cut point only."""
    return random.Random(f"{seed}:{example.user_id}:{len(example.history)}:{example.target.item_id}")


def rationale_for(example: Example, context: ReasoningContext, seed: int = 0,
                  count_tokens: Callable[[str], int] | None = None,
                  max_tokens: int = MAX_RATIONALE_TOKENS, hindsight: bool = True) -> Rationale:
    """The rationale of one example (history and next item), phrased by a generator seeded with `seed` and the
    example, so the same example always gets the same text."""
    return write_rationale(example_facts(example, context), context.catalog[example.target.item_id],
                           example_rng(example, seed), count_tokens, max_tokens, hindsight)


def teacher_forced_text(example: Example, context: ReasoningContext, seed: int = 0,
                        count_tokens: Callable[[str], int] | None = None,
                        max_tokens: int = MAX_RATIONALE_TOKENS, hindsight: bool = True) -> str:
    """The assistant text of `example` in reasoning SFT, rationale + `<answer>`: the states after it are what a
    head on reasoning states trains on (render with `model.prompts.render_chat(tokenizer, user prompt, text)`)."""
    return rationale_for(example, context, seed, count_tokens, max_tokens, hindsight).assistant_text


def token_counter(tokenizer: object) -> Callable[[str], int]:
    """text -> its number of tokens (no special tokens) for a Hugging Face tokenizer."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
