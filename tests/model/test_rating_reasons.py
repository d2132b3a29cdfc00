"""The grounded four-tag reasoning: every claim it writes passes the checker on many random histories, items and
predictions; the checker catches a wrong number, a flipped direction, a wrong verdict, a genre the item does not
have and a sentence it cannot read."""

from __future__ import annotations

import random

import pytest

from indexer.core.catalog import Catalog, Item
from model.prompts import UserHistory
from model.rating.checks import check_reasoning
from model.rating.guided import parse_rating_output
from model.rating.reasons import GOOD, POOR, grounded_reasoning, rounded, verdict

GENRES = ("Action", "Comedy", "Drama", "Horror", "Sci-Fi", "Children's", "Film-Noir")


def random_case(seed: int) -> tuple[UserHistory, Catalog, Item, float, float]:
    rng = random.Random(seed)
    items = [Item(str(i), f"Movie {i}" + (f" ({1950 + i})" if i % 3 == 0 else ""),
                  tuple(rng.sample(GENRES, rng.randint(0, 3))), 1950 + i if i % 5 else None,
                  round(rng.uniform(1, 5), 2) if i % 4 else None, rng.randint(1, 500) if i % 4 else 0)
             for i in range(1, 60)]
    catalog = Catalog.of(items)
    picks = rng.sample(range(1, 60), rng.randint(0, 40))
    entries = [(str(i), rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 3.5, None]), 1_000_000 + i) for i in picks]
    history = UserHistory.of_items(entries, catalog)
    if rng.random() < 0.3:  # an entry by title only: counts in the average, not in the genres
        history = UserHistory((*history.lines, type(history.lines[0])("Outside film", 2.0, None)) if history.lines
                              else history.lines, (*history.item_ids, None) if history.lines else ())
    target = catalog[str(rng.randint(1, 59))]
    return history, catalog, target, round(rng.uniform(3.0, 4.2), 3), rng.uniform(1.0, 5.0)


def test_every_claim_the_generator_writes_is_true():
    claims, genre_lists = 0, 0
    for seed in range(500):
        history, catalog, item, mean, predicted = random_case(seed)
        text = grounded_reasoning(history, catalog, item, mean, predicted)
        assert parse_rating_output(text) == rounded(predicted)
        checks = check_reasoning(text, history, catalog, item, mean, predicted)
        assert all(c.ok for c in checks), (seed, text, [c for c in checks if not c.ok])
        assert {c.tag for c in checks} == {"analyze user", "analyze item", "match", "rate"}
        claims += len(checks)
        genre_lists += sum(c.claim.startswith("Rated ") for c in checks)
    assert claims > 3000 and genre_lists > 300  # the cases exercise every kind of claim


def fixed_case() -> tuple[UserHistory, Catalog, Item]:
    catalog = Catalog.of([Item("1", "Alien", ("Horror", "Sci-Fi"), 1979, 4.1, 300),
                          Item("2", "Heat", ("Crime", "Drama"), 1995, 3.9, 200),
                          Item("3", "Big", ("Comedy", "Drama"), 1988, 3.5, 100),
                          Item("4", "Scream", ("Horror",), 1996, 3.2, 50),
                          Item("5", "Solaris", ("Drama", "Sci-Fi"), 1972, None, 0)])
    history = UserHistory.of_items([("1", 5.0, 1), ("2", 2.0, 2), ("3", 3.0, 3), ("4", 4.0, 4)], catalog)
    return history, catalog, catalog["5"]


def test_the_text_states_the_users_average_genres_the_item_and_a_consistent_verdict():
    history, catalog, item = fixed_case()
    text = grounded_reasoning(history, catalog, item, 3.58, 4.2)
    assert "The user rated 4 items, average 3.50, 0.08 below the overall average of 3.58." in text
    assert "Rated highest: Horror (2 of 4 rated items, 50%, average 4.50)." in text
    assert "Rated lowest: Drama (2 of 4 rated items, 50%, average 2.50)." in text
    assert "Solaris (1972): Drama, Sci-Fi. Released in 1972. No ratings yet." in text
    assert "Drama is a genre the user rates below their average (2.50)." in text
    assert "Predicted rating 4.20, above the user's average of 3.50: a good match." in text
    assert text.endswith("<rate>4</rate>")
    assert verdict(GOOD) == "a good match" and verdict(POOR) == "a poor match" and verdict(3.0) == "a mixed match"


@pytest.mark.parametrize(("old", "new"), [
    ("average 3.50, 0.08 below", "average 3.60, 0.08 below"),   # wrong user average
    ("0.08 below the overall", "0.08 above the overall"),       # flipped comparison
    ("Horror (2 of 4 rated items, 50%, average 4.50)", "Horror (2 of 4 rated items, 50%, average 4.00)"),
    ("Rated lowest: Drama", "Rated lowest: Comedy"),              # a genre rated once is not described
    ("Drama is a genre the user rates below", "Drama is a genre the user rates above"),
    ("Drama is a genre", "Horror is a genre"),                    # the item has no Horror
    ("a good match", "a poor match"),                             # verdict against the number
    ("Predicted rating 4.20", "Predicted rating 3.20"),
    ("Released in 1972", "Released in 1973"),
    ("No ratings yet.", "Average rating 4.00 from 10 ratings."),
    ("No ratings yet.", "No ratings yet. Critics loved it."),    # a sentence the checker cannot verify
    ("<rate>4</rate>", "<rate>5</rate>"),
])
def test_the_checker_catches_a_false_claim(old, new):
    history, catalog, item = fixed_case()
    text = grounded_reasoning(history, catalog, item, 3.58, 4.2)
    assert old in text
    checks = check_reasoning(text.replace(old, new), history, catalog, item, 3.58, 4.2)
    assert not all(c.ok for c in checks)
    assert all(c.why for c in checks if not c.ok)


def test_no_ratings_and_no_format():
    _, catalog, item = fixed_case()
    empty = UserHistory.of_items([("1", None, 1)], catalog)
    text = grounded_reasoning(empty, catalog, item, 3.58, 3.58)
    assert "holds no ratings" in text and "Predicted rating 3.58: a good match." in text
    assert all(c.ok for c in check_reasoning(text, empty, catalog, item, 3.58, 3.58))
    assert not check_reasoning("<rate>4</rate>", empty, catalog, item, 3.58, 3.58)[0].ok
