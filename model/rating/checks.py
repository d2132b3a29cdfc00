"""The checker of `/rate`'s reasoning: reads a four-tag answer sentence by sentence and verifies every claim against
the data it speaks about (the history, the catalog, the target item, the overall average, the predicted rating),
re-deriving each number here rather than reusing the generator's code (`model.rating.reasons`), so a wrong
generator fails it. A sentence it cannot read is a failed claim too: nothing passes unchecked.

In the spirit of Rec-SAVER's check of explanations (Tsai et al., "Leveraging LLM Reasoning Enhances
Personalized Recommender Systems", ACL Findings 2024), but with exact checks, since the claims are facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexer.core.catalog import Catalog, Item
from model.prompts import RATING_TAGS, UserHistory, display_title
from model.rating.guided import parse_rating_output
from model.rating.reasons import GOOD, MIN_GENRE_ITEMS, POOR

TOLERANCE = 0.005 + 1e-9  # numbers are written with two decimals
NUMBER = r"(-?\d+(?:\.\d+)?)"
_GENRE = re.compile(rf"(.+?) \((\d+) of (\d+) rated items, (\d+)%, average {NUMBER}\)")
_USER = re.compile(rf"The user rated (\d+) items, average {NUMBER}, (?:{NUMBER} )?(above|below|level with) the "
                   rf"overall average of {NUMBER}\.")
_GENRE_LIST = re.compile(r" Rated (highest|lowest): (.+?\))\.(?=$| Rated )")
_NO_RATINGS = "The history holds no ratings, so the user's taste is read from the items alone."
_GENRE_MATCH = re.compile(rf"(.+?) is a genre the user rates (above|below|level with) their average \({NUMBER}\)\.")
_PREDICTED = re.compile(rf"Predicted rating {NUMBER}(?:, (above|below|level with) the user's average of {NUMBER})?: "
                        r"a (good|poor|mixed) match\.")


@dataclass(frozen=True)
class ClaimCheck:
    tag: str
    claim: str
    ok: bool
    why: str = ""
    """What is wrong (empty when the claim holds)."""

    def __post_init__(self) -> None:
        if self.ok:
            object.__setattr__(self, "why", "")


class _Facts:
    """The data the claims are about, computed plainly."""

    def __init__(self, history: UserHistory, catalog: Catalog, item: Item, global_mean: float, predicted: float):
        self.item, self.global_mean, self.predicted = item, global_mean, predicted
        rated = [(line.rating, i) for line, i in zip(history.lines, history.item_ids, strict=True)
                 if line.rating is not None]
        self.n_rated = len(rated)
        self.average = sum(r for r, _ in rated) / len(rated) if rated else None
        in_catalog = [(r, catalog[i]) for r, i in rated if i is not None and i in catalog]
        self.n_catalog = len(in_catalog)
        self.genre_ratings: dict[str, list[float]] = {}
        for r, it in in_catalog:
            for genre in set(it.genres):
                self.genre_ratings.setdefault(genre, []).append(r)

    def genre_average(self, genre: str) -> float | None:
        """The user's average over the rated items of `genre`, None when fewer than MIN_GENRE_ITEMS."""
        values = self.genre_ratings.get(genre, [])
        return sum(values) / len(values) if len(values) >= MIN_GENRE_ITEMS else None


def _close(written: str, value: float) -> bool:
    return abs(float(written) - value) <= TOLERANCE


def _direction(value: float, reference: float) -> str:
    return "above" if value - reference >= 0.005 else "below" if value - reference <= -0.005 else "level with"


def _check_genre_list(facts: _Facts, listed: str, highest: bool) -> list[str]:
    """Problems with a 'Rated highest/lowest: ...' list (empty when every entry is true)."""
    problems, named = [], []
    for entry in listed.split("; "):
        m = _GENRE.fullmatch(entry)
        if m is None:
            problems.append(f"unreadable genre entry {entry!r}")
            continue
        genre, count, total, share, avg = m.groups()
        named.append(genre)
        values = facts.genre_ratings.get(genre, [])
        true_avg = facts.genre_average(genre)
        if true_avg is None or int(count) != len(values) or int(total) != facts.n_catalog:
            problems.append(f"{genre}: the history rates {len(values)} of {facts.n_catalog} items in it")
        elif abs(int(share) - 100 * len(values) / facts.n_catalog) > 0.5 or not _close(avg, true_avg):
            problems.append(f"{genre}: share or average wrong (true average {true_avg:.3f})")
        elif facts.average is None or (true_avg <= facts.average if highest else true_avg >= facts.average):
            problems.append(f"{genre} is not rated {'above' if highest else 'below'} the user's average")
    eligible = {g: a for g in facts.genre_ratings if (a := facts.genre_average(g)) is not None}
    for genre in named:
        if genre in eligible:
            beaten = [g for g, a in eligible.items() if g not in named and (a > eligible[genre] if highest
                                                                           else a < eligible[genre])]
            if beaten:
                problems.append(f"{beaten[0]} is rated {'higher' if highest else 'lower'} than the named {genre}")
    return problems


def _check_user(facts: _Facts, text: str) -> list[ClaimCheck]:
    if text == _NO_RATINGS:
        return [ClaimCheck("analyze user", text, facts.n_rated == 0, "the history has ratings")]
    m = _USER.match(text)
    if m is None:
        return [ClaimCheck("analyze user", text, False, "unreadable")]
    n, avg, diff, where, mean = m.groups()
    ok = (facts.average is not None and int(n) == facts.n_rated and _close(avg, facts.average)
          and _close(mean, facts.global_mean) and where == _direction(facts.average, facts.global_mean)
          and (diff is None) == (where == "level with")
          and (diff is None or _close(diff, abs(facts.average - facts.global_mean))))
    out = [ClaimCheck("analyze user", m.group(0), ok, "" if ok else "count, average or comparison wrong")]
    rest = text[m.end():]
    while lists := _GENRE_LIST.match(rest):
        problems = _check_genre_list(facts, lists.group(2), lists.group(1) == "highest")
        out.append(ClaimCheck("analyze user", lists.group(0).strip(), not problems, "; ".join(problems)))
        rest = rest[lists.end():]
    if rest:
        out.append(ClaimCheck("analyze user", rest, False, "unreadable"))
    return out


def _check_item(facts: _Facts, text: str) -> list[ClaimCheck]:
    item, out = facts.item, []
    title = display_title(item)
    if not text.startswith(title):
        return [ClaimCheck("analyze item", text, False, f"does not start with the title {title!r}")]
    rest = text[len(title):]
    genres = f": {', '.join(item.genres)}." if item.genres else "."
    out.append(ClaimCheck("analyze item", title + genres, rest.startswith(genres), "genres wrong"))
    rest = rest[len(genres):] if rest.startswith(genres) else ""
    while rest:
        if m := re.match(r" Released in (\d+)\.", rest):
            ok = item.year == int(m.group(1))
        elif m := re.match(rf" Average rating {NUMBER} from (\d+) ratings\.", rest):
            ok = item.avg_rating is not None and _close(m.group(1), item.avg_rating) and \
                int(m.group(2)) == item.rating_count
        elif m := re.match(r" No ratings yet\.", rest):
            ok = item.avg_rating is None or item.rating_count == 0
        else:
            return [*out, ClaimCheck("analyze item", rest, False, "unreadable")]
        out.append(ClaimCheck("analyze item", m.group(0).strip(), ok, "" if ok else "not what the catalog says"))
        rest = rest[m.end():]
    return out


def _check_match(facts: _Facts, text: str) -> list[ClaimCheck]:
    out, rest = [], text
    while m := _GENRE_MATCH.match(rest):
        genre, where, avg = m.groups()
        true_avg = facts.genre_average(genre)
        ok = (genre in facts.item.genres and true_avg is not None and facts.average is not None
              and _close(avg, true_avg) and where == _direction(true_avg, facts.average))
        out.append(ClaimCheck("match", m.group(0), ok, "" if ok else "genre, average or direction wrong"))
        rest = rest[m.end():].lstrip()
    m = _PREDICTED.fullmatch(rest)
    if m is None:
        return [*out, ClaimCheck("match", rest, False, "unreadable")]
    value, where, avg, kind = m.groups()
    expected = "good" if facts.predicted >= GOOD else "poor" if facts.predicted <= POOR else "mixed"
    ok = (_close(value, facts.predicted) and kind == expected
          and (where is None) == (facts.average is None)
          and (where is None or (_close(avg, facts.average) and where == _direction(facts.predicted, facts.average))))
    return [*out, ClaimCheck("match", m.group(0), ok, "" if ok else f"prediction or verdict wrong ({expected})")]


def check_reasoning(text: str, history: UserHistory, catalog: Catalog, item: Item, global_mean: float,
                    predicted: float) -> list[ClaimCheck]:
    """Every claim of a four-tag answer, each verified (`ok`) against the data, `why` saying what is wrong."""
    rate = parse_rating_output(text, require_reasoning=True)
    if rate is None:
        return [ClaimCheck("format", text, False, "not the four tags in order with an integer <rate>")]
    facts = _Facts(history, catalog, item, global_mean, predicted)
    content = {tag: re.search(f"<{tag}>(.*?)</{tag}>", text, re.DOTALL).group(1) for tag in RATING_TAGS}  # type: ignore[union-attr]
    return [*_check_user(facts, content["analyze user"]), *_check_item(facts, content["analyze item"]),
            *_check_match(facts, content["match"]),
            ClaimCheck("rate", f"<rate>{rate}</rate>", rate == min(5, max(1, int(predicted + 0.5))),
                       "not the prediction rounded half up")]
