"""Grounded four-tag reasoning for `/rate` (RecZero, "Think before Recommendation": `<analyze user>`,
`<analyze item>`, `<match>`, `<rate>`), written from the data instead of by the language model, so that every
sentence is true and the `<match>` verdict agrees with the number (docs/design.md section 3).

The number comes from the rating model (`model.rating.factors`); this module writes the text around it:
- `<analyze user>`: how many ratings the history holds, their average and how it compares with the overall
  average (the rating model's mu); the genres the user rates highest and lowest, each with its share of the
  rated catalog items and its average (genres with at least `MIN_GENRE_ITEMS` rated items);
- `<analyze item>`: the target's title, genres, year and its average rating with the count, from the catalog;
- `<match>`: which of the target's genres the user rates above or below their own average, then the predicted
  rating, how it compares with the user's average and the verdict: a good match from `GOOD` up, a poor one up to
  `POOR`, else a mixed one;
- `<rate>`: the prediction rounded half up.

`check_reasoning` (`model.rating.checks`) re-derives every claim from the same data with its own code.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from indexer.core.catalog import Catalog, Item
from model.prompts import UserHistory, display_title
from model.rating.factors import RatingModel

MIN_GENRE_ITEMS = 2
"""A genre is described only when the history rates at least this many of its items."""
TOP_GENRES = 2
"""At most this many genres are named as rated highest, and as many as rated lowest."""
GOOD, POOR = 3.5, 2.5
"""Verdict thresholds on the predicted rating: good from GOOD up, poor up to POOR, mixed between."""


@dataclass(frozen=True)
class GenreStat:
    genre: str
    count: int
    average: float


@dataclass(frozen=True)
class UserProfile:
    """What the history says: its rated entries' average and, over the rated catalog items, each genre's
    count and average rating."""

    n_rated: int
    average: float | None
    n_catalog: int
    """Rated entries that are catalog items (the denominator of the genre shares)."""
    genres: dict[str, GenreStat]

    @classmethod
    def of(cls, history: UserHistory, catalog: Catalog) -> UserProfile:
        ratings = [line.rating for line in history.lines if line.rating is not None]
        by_genre: dict[str, list[float]] = defaultdict(list)
        n_catalog = 0
        for line, item_id in zip(history.lines, history.item_ids, strict=True):
            item = catalog.get(item_id) if item_id is not None else None
            if line.rating is None or item is None:
                continue
            n_catalog += 1
            for genre in dict.fromkeys(item.genres):
                by_genre[genre].append(line.rating)
        stats = {g: GenreStat(g, len(r), sum(r) / len(r)) for g, r in by_genre.items() if len(r) >= MIN_GENRE_ITEMS}
        return cls(len(ratings), sum(ratings) / len(ratings) if ratings else None, n_catalog, stats)

    def ranked(self) -> tuple[list[GenreStat], list[GenreStat]]:
        """(highest-rated genres above the user's average, lowest-rated below it), at most TOP_GENRES each."""
        if self.average is None:
            return [], []
        order = sorted(self.genres.values(), key=lambda s: (-s.average, -s.count, s.genre))
        high = [s for s in order if s.average > self.average][:TOP_GENRES]
        low = [s for s in reversed(order) if s.average < self.average][:TOP_GENRES]
        return high, low


def compare(value: float, reference: float) -> str:
    """'above' or 'below' when the two differ by half a hundredth or more (what two decimals can show), else
    'level with'."""
    diff = value - reference
    return "above" if diff >= 0.005 else "below" if diff <= -0.005 else "level with"


def verdict(predicted: float) -> str:
    return "a good match" if predicted >= GOOD else "a poor match" if predicted <= POOR else "a mixed match"


def rounded(predicted: float) -> int:
    """The `<rate>` integer: half up, within 1..5."""
    return min(5, max(1, int(predicted + 0.5)))


def _genre_phrase(stat: GenreStat, n_catalog: int) -> str:
    return f"{stat.genre} ({stat.count} of {n_catalog} rated items, {100 * stat.count / n_catalog:.0f}%, average " \
           f"{stat.average:.2f})"


def analyze_user(profile: UserProfile, global_mean: float) -> str:
    if profile.average is None:
        return "The history holds no ratings, so the user's taste is read from the items alone."
    diff = abs(round(profile.average - global_mean, 2))
    where = compare(profile.average, global_mean)
    text = (f"The user rated {profile.n_rated} items, average {profile.average:.2f}, "
            + (f"{diff:.2f} {where}" if where != "level with" else where)
            + f" the overall average of {global_mean:.2f}.")
    high, low = profile.ranked()
    if high:
        text += " Rated highest: " + "; ".join(_genre_phrase(s, profile.n_catalog) for s in high) + "."
    if low:
        text += " Rated lowest: " + "; ".join(_genre_phrase(s, profile.n_catalog) for s in low) + "."
    return text


def analyze_item(item: Item) -> str:
    text = display_title(item)
    if item.genres:
        text += f": {', '.join(item.genres)}"
    text += "."
    if item.year is not None:
        text += f" Released in {item.year}."
    if item.avg_rating is not None and item.rating_count:
        text += f" Average rating {item.avg_rating:.2f} from {item.rating_count} ratings."
    else:
        text += " No ratings yet."
    return text


def match(profile: UserProfile, item: Item, predicted: float) -> str:
    parts = []
    if profile.average is not None:
        for genre in dict.fromkeys(item.genres):
            stat = profile.genres.get(genre)
            if stat is not None:
                parts.append(f"{genre} is a genre the user rates {compare(stat.average, profile.average)} their "
                             f"average ({stat.average:.2f}).")
    text = " ".join(parts) + (" " if parts else "")
    text += f"Predicted rating {predicted:.2f}"
    if profile.average is not None:
        text += f", {compare(predicted, profile.average)} the user's average of {profile.average:.2f}"
    return text + f": {verdict(predicted)}."


def grounded_reasoning(history: UserHistory, catalog: Catalog, item: Item, global_mean: float,
                       predicted: float) -> str:
    """The four-tag answer for a rating `predicted` of `item` (every claim checkable by `check_reasoning`)."""
    profile = UserProfile.of(history, catalog)
    return (f"<analyze user>{analyze_user(profile, global_mean)}</analyze user>\n"
            f"<analyze item>{analyze_item(item)}</analyze item>\n"
            f"<match>{match(profile, item, predicted)}</match>\n"
            f"<rate>{rounded(predicted)}</rate>")


def model_rating(model: RatingModel, history: UserHistory, catalog: Catalog, item: Item, reasoning: bool
                 ) -> tuple[float, str]:
    """The rating model's rating of `item` for a user folded in from `history`, and its answer text."""
    user_bias, user_factors = model.fold_in(history.item_ids, [line.rating for line in history.lines])
    rating = float(model.predict(user_bias, user_factors, [item.item_id])[0])
    if reasoning:
        return rating, grounded_reasoning(history, catalog, item, model.mean, rating)
    return rating, f"<rate>{rounded(rating)}</rate>"
