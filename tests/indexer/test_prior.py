"""The popularity prior: the store's search with a prior equals a brute-force ranking of cosine + weight x
log(1 + count), for every weight (small ones stop after one fetch, large ones refetch), with exclusions, with
counts from the catalog or given, and after a hot add."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.core.catalog import Catalog, Item
from indexer.prior import log_count_prior, rerank_with_prior
from indexer.store import ItemStore


@pytest.fixture
def counted(catalog: Catalog, rng: np.random.Generator) -> Catalog:
    """The shared catalog with heavy-tailed rating counts (a few items far more popular than the rest)."""
    counts = np.floor(rng.pareto(1.0, len(catalog)) * 20).astype(int)
    return Catalog.of(Item(**{**item.to_json(), "genres": item.genres, "rating_count": int(c)})
                      for item, c in zip(catalog, counts, strict=True))


def brute_force(store: ItemStore, query: np.ndarray, counts: dict[str, int], weight: float, k: int,
                exclude: set[str]) -> list[str]:
    ids = [i for i in store.catalog.ids() if i not in exclude]
    cosines = store.vectors_of(ids) @ _unit(query - store.center)
    scores = cosines + weight * np.log1p([counts[i] for i in ids])
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


@pytest.mark.parametrize("weight", [0.001, 0.05, 0.3, 5.0])
def test_search_with_a_prior_is_the_exact_top_k_of_the_combined_score(counted, vectors, fingerprint, rng, weight):
    store = ItemStore.create(counted, vectors, fingerprint)
    counts = {item.item_id: item.rating_count for item in counted}
    queries = (3.0 + rng.standard_normal((5, vectors.shape[1]))).astype(np.float32)
    exclude = [set(), {"item0", "item1"}, set(counted.ids()[:150]), set(), {"item7"}]
    results = store.search(queries, 10, exclude, popularity_prior=weight)
    for query, ex, got in zip(queries, exclude, results, strict=True):
        assert [item_id for item_id, _ in got] == brute_force(store, query, counts, weight, 10, ex)
        cosine = dict(store.search(query[None, :], len(store))[0])
        assert all(score == pytest.approx(cosine[i] + weight * math.log1p(counts[i]), abs=1e-5) for i, score in got)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True) and not ex & {i for i, _ in got}


def test_a_strong_prior_ranks_by_popularity_and_zero_weight_is_plain_cosine(counted, vectors, fingerprint, rng):
    store = ItemStore.create(counted, vectors, fingerprint)
    query = (3.0 + rng.standard_normal((1, vectors.shape[1]))).astype(np.float32)
    by_count = sorted(counted, key=lambda item: -item.rating_count)
    top = [i for i, _ in store.search(query, 3, popularity_prior=1e4)[0]]
    assert [counted[i].rating_count for i in top] == [item.rating_count for item in by_count[:3]]
    assert store.search(query, 10, popularity_prior=0.0) == store.search(query, 10)


def test_given_counts_replace_the_catalog_counts_and_hot_added_items_count_zero(counted, vectors, fingerprint,
                                                                                 make_items, rng):
    store = ItemStore.create(counted, vectors, fingerprint)
    query = vectors[:1] + 0.01
    only_item5 = {item_id: (10**6 if item_id == "item5" else 0) for item_id in counted.ids()}
    assert store.search(query, 1, popularity_prior=1.0, counts=only_item5)[0][0][0] == "item5"
    [new] = make_items(1, start=500)
    store.add_items([new], vectors[:1] + 0.01)  # the item nearest the query, with no interactions yet
    cosine_first = store.search(query, 1)[0][0][0]
    assert cosine_first in ("item500", "item0")
    with_prior = store.search(query, len(store), popularity_prior=0.2)[0]
    assert dict(with_prior)["item500"] == pytest.approx(dict(store.search(query, len(store))[0])["item500"], abs=1e-6)


def test_bad_weights_and_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        log_count_prior({"a": 1}, -0.1)
    with pytest.raises(ValueError, match="weight"):
        log_count_prior({"a": 1}, float("nan"))
    with pytest.raises(ValueError, match="counts"):
        log_count_prior({"a": -1}, 0.1)


def test_rerank_refetches_until_no_unseen_item_can_win() -> None:
    cosines = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1, "e": 0.0}
    ranked = sorted(cosines.items(), key=lambda pair: -pair[1])
    fetches: list[int] = []

    def search(n: int) -> list[list[tuple[str, float]]]:
        fetches.append(n)
        return [ranked[:n]]

    # "e" is last by cosine but its prior lifts it to the top: the first fetch (4 x k = 4) cannot prove that
    got = rerank_with_prior(search, {"e": 2.0}, k=1, total=5)
    assert got == [[("e", 2.0)]] and fetches == [4, 5]
    fetches.clear()
    [[(best, score)]] = rerank_with_prior(search, {"a": 0.05}, k=1, total=5)
    assert (best, fetches) == ("a", [4]) and score == pytest.approx(0.95)


@pytest.mark.parametrize("weight", [0.01, 0.2, 3.0])
def test_search_with_per_query_terms_is_the_exact_top_k_of_the_sum(counted, vectors, fingerprint, rng, weight):
    """Each query row gets its own additive term (the conclusion term of the reasoning ranker), on top of the
    prior: the result is the brute-force top k of cosine + prior + that row's term, with exclusions."""
    store = ItemStore.create(counted, vectors, fingerprint)
    counts = {item.item_id: item.rating_count for item in counted}
    queries = (3.0 + rng.standard_normal((3, vectors.shape[1]))).astype(np.float32)
    ids = counted.ids()
    terms = [{i: weight for i in ids[::7]}, {}, {i: 2 * weight for i in ids[3:40]}]
    exclude = [{"item7"}, set(), set(ids[:5])]
    results = store.search(queries, 10, exclude, popularity_prior=0.05, terms=terms)
    for query, term, ex, got in zip(queries, terms, exclude, results, strict=True):
        kept = [i for i in ids if i not in ex]
        scores = (store.vectors_of(kept) @ _unit(query - store.center) + 0.05 * np.log1p([counts[i] for i in kept])
                  + np.array([term.get(i, 0.0) for i in kept]))
        assert [i for i, _ in got] == [kept[j] for j in np.argsort(-scores, kind="stable")[:10]]
        assert [s for _, s in got] == pytest.approx(sorted(scores, reverse=True)[:10], abs=1e-5)
    assert store.search(queries, 10, terms=[{}, {}, {}]) == store.search(queries, 10)
