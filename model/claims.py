"""The language of the taught reasoning: the claims a rationale makes and the sentences that phrase them. One table
of templates serves writing (`render`, the trainer's rationale generator) and reading (`parse`: the trainer's
checker, and the served rankers, which read the conclusion), so every sentence the generator writes can be read back.

A rationale is sentences joined by ". ", each one template filled in: the dominant genres or decades, the ratings the
user gives most often, the genre the recent entries lean to, and a closing prediction of the next item's genre and
decade. Several templates per kind, picked by a seeded generator, so no fixed boilerplate can be copied blindly.
Claims are checked against a history by `trainer.reasoning.checker` (the prediction is not a claim about the
history: it is scored against the next item instead). The reasoning format follows R2ec ("Towards Large Recommender
Models with Reasoning"): a short analysis, then `<answer>`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from indexer.core.catalog import Item


@dataclass(frozen=True)
class GenreLead:
    """`genre` is among the window's dominant genres."""

    genre: str


@dataclass(frozen=True)
class DecadeLead:
    """Films of `decade` are among the window's most frequent."""

    decade: int


@dataclass(frozen=True)
class RatingLead:
    """`rating` is among the ratings the user gives most often in the window."""

    rating: float


@dataclass(frozen=True)
class RecentGenre:
    """`genre` is the most frequent among the recent entries (the window holding earlier ones too)."""

    genre: str


@dataclass(frozen=True)
class Prediction:
    """The conclusion: the next item's likely genre and decade (either may be missing)."""

    genre: str | None
    decade: int | None


Claim = GenreLead | DecadeLead | RatingLead | RecentGenre

_SLOTS = {"g": r"[^\s,;.()\"]+(?: [^\s,;.()\"]+)*?", "d": r"\d{3}0", "r": r"[1-5](?:\.5)?",
          "art": r"an?"}
"""Slot pattern by slot name without its index digit ("g0" -> "g")."""

TEMPLATES: dict[str, tuple[str, ...]] = {
    "genres": ("Mostly {g0} and {g1}", "Top genres: {g0}, {g1}", "{g0} and {g1} lead", "Mostly {g0}",
               "Top genre: {g0}", "{g0} leads"),
    "decades": ("Era: mostly {d0}s", "Mainly {d0}s titles", "{d0}s films dominate", "Eras: {d0}s, {d1}s",
                "Mainly {d0}s and {d1}s titles"),
    "rating": ("Usually rates {r0}", "Usual score: {r0}", "Most ratings: {r0}", "Usually rates {r0} or {r1}",
               "Most ratings: {r0} and {r1}"),
    "recent": ("Lately {g0}", "Recent picks lean {g0}", "Latest picks: mostly {g0}"),
    "prediction": ("Next: likely a {d0}s {g0}", "So expect {art} {g0} from the {d0}s", "Probably a {d0}s {g0} next",
                   "Next: likely {art} {g0}", "So expect {art} {g0} next"),
}
"""Sentence templates by kind; a slot is a letter code and an index ("g0": the first genre); "art" is the article
before the first genre, filled in by `render`. No two kinds read the same sentence (the first template that
matches reads it, in this order)."""

def _slots(template: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\{(\w+)\}", template))


def _regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_SLOTS[part.rstrip('0123456789')]})"
                      for i, part in enumerate(parts))
    return re.compile(pattern, re.IGNORECASE)


_COMPILED = [(kind, template, _regex(template), frozenset(_slots(template)))
             for kind, templates in TEMPLATES.items() for template in templates]


def render(kind: str, values: Mapping[str, object], rng: random.Random) -> str:
    """One sentence of `kind` with `values` in its slots, the template drawn by `rng` among those with exactly
    these slots; a rating ("r0") is written as the prompt writes it (5.0 -> "5")."""
    keys = frozenset(values)
    fitting = [template for k, template, _, slots in _COMPILED if k == kind and slots - {"art"} == keys]
    if not fitting:
        raise ValueError(f"no {kind} template has the slots {sorted(keys)}")
    words = {k: (f"{v:g}" if k.startswith("r") else v) for k, v in values.items()}
    article = "an" if str(values.get("g0", "x"))[:1].lower() in "aeiou" else "a"
    return rng.choice(fitting).format(**words, art=article)


def _canonical(name: str, genres: Mapping[str, str]) -> str:
    return genres.get(name.lower(), name)


def _indexed(groups: Mapping[str, str], letter: str) -> list[str]:
    return [groups[f"{letter}{i}"] for i in range(4) if groups.get(f"{letter}{i}") is not None]


def _claims_of(kind: str, groups: Mapping[str, str], genres: Mapping[str, str]) -> list[Claim | Prediction]:
    g = [_canonical(x, genres) for x in _indexed(groups, "g")]
    d = [int(x) for x in _indexed(groups, "d")]
    builders: dict[str, Callable[[], list[Claim | Prediction]]] = {
        "genres": lambda: [GenreLead(x) for x in g],
        "decades": lambda: [DecadeLead(x) for x in d],
        "rating": lambda: [RatingLead(float(x)) for x in _indexed(groups, "r")],
        "recent": lambda: [RecentGenre(g[0])],
        "prediction": lambda: [Prediction(g[0] if g else None, d[0] if d else None)],
    }
    return builders[kind]()


def split_sentences(text: str) -> list[str]:
    """The sentences of a text: split at ".", ";" or a line break outside double quotes (a title in quotes may
    hold any of them), stripped, empty ones dropped."""
    sentences, current, quoted = [], [], False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        at_break = char in ";\n" or (char == "." and (i + 1 == len(text) or text[i + 1].isspace()))
        if at_break and not quoted:
            sentences.append("".join(current))
            current = []
        else:
            current.append(char)
    sentences.append("".join(current))
    return [s.strip() for s in sentences if s.strip()]


@dataclass(frozen=True)
class Parsed:
    """A text read back: its claims about the history, its prediction (the last one, if any), and the sentences
    no template reads."""

    claims: tuple[Claim, ...]
    prediction: Prediction | None
    unparsed: tuple[str, ...]


def parse(text: str, genres: Mapping[str, str] | None = None) -> Parsed:
    """Every sentence of `text` matched against the templates; genre names mapped to their catalog spelling by
    their lowercase form through `genres` (unknown names are kept as written)."""
    lookup = genres or {}
    claims: list[Claim] = []
    prediction: Prediction | None = None
    unparsed: list[str] = []
    for sentence in split_sentences(text):
        for kind, _, regex, _ in _COMPILED:
            match = regex.fullmatch(sentence)
            if match:
                for claim in _claims_of(kind, match.groupdict(), lookup):
                    if isinstance(claim, Prediction):
                        prediction = claim
                    else:
                        claims.append(claim)
                break
        else:
            unparsed.append(sentence)
    return Parsed(tuple(claims), prediction, tuple(unparsed))


def decade_of(year: int | None) -> int | None:
    """1994 -> 1990."""
    return None if year is None else year // 10 * 10


def prediction_matches(prediction: Prediction | None, target: Item) -> tuple[bool, bool]:
    """(genre right, decade right) of a prediction for the item that came next; a missing part is wrong."""
    if prediction is None:
        return False, False
    genre = prediction.genre is not None and prediction.genre in target.genres
    decade = prediction.decade is not None and prediction.decade == decade_of(target.year)
    return genre, decade
