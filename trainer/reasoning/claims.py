"""The claims a rationale makes and the sentences that phrase them: one table of templates serves both writing
(`render`) and reading (`parse`), so every sentence the generator writes is one the checker can read back.

A rationale is sentences joined by ". ", each one template filled in: the dominant genres or decades with their
shares, the user's rating tendency against the global mean, a recent shift (a genre gained, a genre kept, older or
newer films), one or two favourites by title (in double quotes, so a title may hold any other punctuation), and a
closing prediction of the next item's genre and decade. Several templates per kind, picked by a seeded generator,
so no fixed boilerplate can be copied blindly. Claims are checked against a history by `trainer.reasoning.checker`
(the prediction is not a claim about the history: it is scored against the next item instead). The reasoning format
follows R2ec ("Towards Large Recommender Models with Reasoning"): a short analysis, then `<answer>`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GenreShare:
    """`genre` is among the window's dominant genres and makes up about `pct` percent of its items."""

    genre: str
    pct: int


@dataclass(frozen=True)
class DecadeShare:
    """Films of `decade` are among the most frequent and make up about `pct` percent of the window."""

    decade: int
    pct: int


@dataclass(frozen=True)
class RatingTendency:
    """The user's mean rating `user_mean` is `direction` ("above", "below", "near") the global `global_mean`."""

    direction: str
    user_mean: float
    global_mean: float


@dataclass(frozen=True)
class GenreGain:
    """`genre` is more frequent among the recent entries than among the earlier ones."""

    genre: str


@dataclass(frozen=True)
class SteadyGenre:
    """`genre` leads both the recent and the earlier entries."""

    genre: str


@dataclass(frozen=True)
class EraShift:
    """The recent entries are "older" or "newer" films than the earlier ones."""

    direction: str


@dataclass(frozen=True)
class Favourite:
    """`title` is in the window, rated the window's highest rating (at least 4)."""

    title: str


@dataclass(frozen=True)
class Prediction:
    """The conclusion: the next item's likely genre and decade (either may be missing)."""

    genre: str | None
    decade: int | None


Claim = GenreShare | DecadeShare | RatingTendency | GenreGain | SteadyGenre | EraShift | Favourite

_SLOTS = {
    "g": r"[^\s,;.()\"%]+(?: [^\s,;.()\"%]+)*?", "p": r"\d{1,3}", "d": r"\d{3}0", "dir": r"above|below|close to",
    "mean": r"\d(?:\.\d+)?", "avg": r"\d(?:\.\d+)?", "era": r"older|newer", "t": r"[^\"]+", "art": r"an?",
}
"""Slot pattern by slot name without its index digit ("g0" -> "g")."""

TEMPLATES: dict[str, tuple[str, ...]] = {
    "genres": ("Mostly {g0} ({p0}%) and {g1} ({p1}%)", "{g0} leads at {p0}%, then {g1} at {p1}%",
               "Top genres: {g0} {p0}%, {g1} {p1}%", "Mostly {g0} ({p0}%)", "{g0} leads at {p0}%",
               "Top genre: {g0} {p0}%"),
    "decades": ("{d0}s films make up {p0}%", "Era: {d0}s ({p0}%)", "Mainly {d0}s titles ({p0}%)",
                "{d0}s {p0}%, {d1}s {p1}%", "Eras: {d0}s {p0}%, {d1}s {p1}%"),
    "rating": ("Rates {dir} average ({mean} vs {avg})", "Ratings run {dir} the mean, {mean} vs {avg}",
               "Scores {dir} typical ({mean} vs {avg})"),
    "gain": ("Lately more {g0}", "Recent picks lean {g0}", "Moving toward {g0} lately"),
    "steady": ("Lately still {g0}", "Recent picks stay {g0}"),
    "era": ("Recent picks are {era}", "Lately {era} films"),
    "favourites": ('Loved "{t0}" and "{t1}"', 'Favourites: "{t0}", "{t1}"', 'Loved "{t0}"', 'Top-rated: "{t0}"',
                   '"{t0}" got a top score'),
    "prediction": ("Next: likely a {d0}s {g0}", "So expect {art} {g0} from the {d0}s", "Probably a {d0}s {g0} next",
                   "Next: likely {art} {g0}", "So expect {art} {g0} next"),
}
"""Sentence templates by kind; a slot is a letter code and an index ("g0": the first genre); "art" is the article
before the first genre, filled in by `render`."""

_DIRECTION_WORDS = {"above": "above", "below": "below", "near": "close to"}


def _slots(template: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\{(\w+)\}", template))


def _bare_shares(text: str) -> str:
    """"Drama (35%)" -> "Drama 35%": a share reads the same with or without parentheses (templates and texts alike
    are read in this form, so a model that mixes two phrasings of a share is still read)."""
    return re.sub(r"\((\{p\d\}|\d{1,3})%\)", r"\1%", text)


def _regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", _bare_shares(template))
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_SLOTS[part.rstrip('0123456789')]})"
                      for i, part in enumerate(parts))
    return re.compile(pattern, re.IGNORECASE)


_COMPILED = [(kind, template, _regex(template), frozenset(_slots(template)))
             for kind, templates in TEMPLATES.items() for template in templates]


def render(kind: str, values: Mapping[str, object], rng: random.Random) -> str:
    """One sentence of `kind` with `values` in its slots, the template drawn by `rng` among those with exactly
    these slots; a "dir" value is a direction ("above", "below", "near")."""
    keys = frozenset(values)
    fitting = [template for k, template, _, slots in _COMPILED if k == kind and slots - {"art"} == keys]
    if not fitting:
        raise ValueError(f"no {kind} template has the slots {sorted(keys)}")
    words = {k: (_DIRECTION_WORDS[str(v)] if k == "dir" else v) for k, v in values.items()}
    article = "an" if str(values.get("g0", "x"))[:1].lower() in "aeiou" else "a"
    return rng.choice(fitting).format(**words, art=article)


def _canonical(name: str, genres: Mapping[str, str]) -> str:
    return genres.get(name.lower(), name)


def _indexed(groups: Mapping[str, str], letter: str) -> list[str]:
    return [groups[f"{letter}{i}"] for i in range(4) if groups.get(f"{letter}{i}") is not None]


def _claims_of(kind: str, groups: Mapping[str, str], genres: Mapping[str, str]) -> list[Claim | Prediction]:
    g = [_canonical(x, genres) for x in _indexed(groups, "g")]
    p = [int(x) for x in _indexed(groups, "p")]
    d = [int(x) for x in _indexed(groups, "d")]
    builders: dict[str, Callable[[], list[Claim | Prediction]]] = {
        "genres": lambda: [GenreShare(*pair) for pair in zip(g, p, strict=True)],
        "decades": lambda: [DecadeShare(*pair) for pair in zip(d, p, strict=True)],
        "rating": lambda: [RatingTendency({v: k for k, v in _DIRECTION_WORDS.items()}[groups["dir"].lower()],
                                          float(groups["mean"]), float(groups["avg"]))],
        "gain": lambda: [GenreGain(g[0])],
        "steady": lambda: [SteadyGenre(g[0])],
        "era": lambda: [EraShift(groups["era"].lower())],
        "favourites": lambda: [Favourite(t.strip()) for t in _indexed(groups, "t")],
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
            match = regex.fullmatch(_bare_shares(sentence))
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
