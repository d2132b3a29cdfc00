"""ItemIndex (flat): exact cosine search against numpy, exclusion, errors and atomicity, upsert, removal."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import DuplicateItemError, UnknownItemError
from indexer.index import ItemIndex


def ids_for(n: int) -> list[str]:
    return [f"item{i}" for i in range(n)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(items: np.ndarray, queries: np.ndarray, k: int, center: np.ndarray | None = None):
    """(top-k row indices, their cosine scores) per query, by numpy in float64."""
    c = np.zeros(items.shape[1]) if center is None else center.astype(np.float64)
    scores = unit(queries.astype(np.float64) - c) @ unit(items.astype(np.float64) - c).T
    top = np.argsort(-scores, axis=1)[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


@pytest.mark.parametrize("center", [False, True])
def test_flat_search_matches_numpy_cosine(rng, vectors, center):
    index = ItemIndex.build(ids_for(len(vectors)), vectors, center=center)
    queries = (3.0 + rng.standard_normal((7, vectors.shape[1]))).astype(np.float32)
    results = index.search(queries, k=10)
    top, scores = brute_force(vectors, queries, 10, vectors.mean(axis=0) if center else None)
    for row, result in enumerate(results):
        assert [item_id for item_id, _ in result] == [f"item{i}" for i in top[row]]
        np.testing.assert_allclose([s for _, s in result], scores[row], atol=1e-5)


def test_centering_changes_the_ranking_of_anisotropic_vectors(rng, vectors):
    queries = (3.0 + rng.standard_normal((5, vectors.shape[1]))).astype(np.float32)
    raw = ItemIndex.build(ids_for(len(vectors)), vectors).search(queries, 10)
    centered = ItemIndex.build(ids_for(len(vectors)), vectors, center=True).search(queries, 10)
    assert [ids for ids, _ in raw[0]] != [ids for ids, _ in centered[0]]
    assert min(s for _, s in raw[0]) > 0.8  # the shared offset makes raw cosines all high


def test_hot_added_items_and_queries_use_the_stored_center(rng, vectors):
    index = ItemIndex.build(ids_for(len(vectors)), vectors, center=True)
    center = index.center.copy()
    new = (3.0 + rng.standard_normal((3, vectors.shape[1]))).astype(np.float32)
    index.add(["new0", "new1", "new2"], new)
    np.testing.assert_array_equal(index.center, center)  # not recomputed with the new items
    query = new[1:2] + 0.01 * rng.standard_normal((1, vectors.shape[1])).astype(np.float32)
    (best_id, best_score), *_ = index.search(query, 3)[0]
    assert best_id == "new1"
    assert best_score == pytest.approx(float(unit(query[0] - center) @ unit(new[1] - center)), abs=1e-5)
    np.testing.assert_allclose(index.vectors_of(["new1"])[0], unit(new[1] - center), atol=1e-6)


def test_excluded_ids_never_returned_and_k_results_kept(rng, vectors):
    index = ItemIndex.build(ids_for(len(vectors)), vectors)
    queries = rng.standard_normal((3, vectors.shape[1])).astype(np.float32)
    full, _ = brute_force(vectors, queries, len(vectors))
    exclude = [{f"item{i}" for i in full[row, :15]} | {"not-an-item"} for row in range(3)]
    results = index.search(queries, k=10, exclude=exclude)
    for row, result in enumerate(results):
        assert [item_id for item_id, _ in result] == [f"item{i}" for i in full[row, 15:25]]
        assert not exclude[row] & {item_id for item_id, _ in result}
    with pytest.raises(TypeError, match="not a string"):
        index.search(queries[:1], k=10, exclude=["item1"])
    with pytest.raises(ValueError, match="one collection per query: 1 for 3 queries"):
        index.search(queries, k=10, exclude=[{"item1"}])


def test_k_larger_than_the_catalog_returns_every_allowed_item(rng):
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    index = ItemIndex.build(ids_for(50), vectors)
    [result] = index.search(vectors[:1], k=1000, exclude=[{"item1", "item2", "item3"}])
    assert len(result) == 47
    assert {item_id for item_id, _ in result} == set(ids_for(50)) - {"item1", "item2", "item3"}
    scores = [s for _, s in result]
    assert scores == sorted(scores, reverse=True)
    assert result[0] == ("item0", pytest.approx(1.0, abs=1e-5))


def test_empty_index_returns_no_results(rng):
    index = ItemIndex(8)
    assert index.search(rng.standard_normal((2, 8)), k=5) == [[], []]
    assert len(index) == 0 and index.ids() == []


def test_duplicates_raise_naming_them_and_add_nothing(rng, vectors):
    index = ItemIndex.build(ids_for(10), vectors[:10])
    before = index.search(vectors[:2], 5)
    with pytest.raises(DuplicateItemError, match="already in the index: 'item3'") as err:
        index.add(["fresh", "item3"], vectors[10:12])
    assert err.value.item_ids == ["item3"]
    with pytest.raises(DuplicateItemError, match="repeated within the call: 'x'"):
        index.add(["x", "y", "x"], vectors[10:13])
    with pytest.raises(DuplicateItemError, match="repeated within the call: 'x'"):
        index.add(["x", "x"], vectors[10:12], upsert=True)
    assert len(index) == 10 and "fresh" not in index and "x" not in index
    assert index.search(vectors[:2], 5) == before


def test_bad_vectors_raise_naming_the_problem_and_add_nothing(vectors):
    index = ItemIndex.build(ids_for(10), vectors[:10])
    with pytest.raises(ValueError, match=r"shape \(n, 32\), got \(2, 31\)"):
        index.add(["a", "b"], vectors[:2, :31])
    bad = vectors[10:13].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values at rows \[1\] \(item ids 'b'\)"):
        index.add(["a", "b", "c"], bad)
    with pytest.raises(ValueError, match="got 2 item ids but 3 vectors"):
        index.add(["a", "b"], vectors[10:13])
    with pytest.raises(ValueError, match="queries must have shape"):
        index.search(vectors[0], k=3)
    assert len(index) == 10 and "a" not in index


def test_zero_vector_after_centering_is_rejected(vectors):
    index = ItemIndex.build(ids_for(10), vectors[:10], center=True)
    with pytest.raises(ValueError, match="zero length after centering at rows \\[0\\] \\(item ids 'mean'\\)"):
        index.add(["mean"], index.center[None, :])


def test_unknown_ids_raise_naming_them_and_remove_nothing(vectors):
    index = ItemIndex.build(ids_for(10), vectors[:10])
    with pytest.raises(UnknownItemError, match="not in the index: 'nope'") as err:
        index.remove(["item1", "nope"])
    assert err.value.item_ids == ["nope"]
    assert len(index) == 10 and "item1" in index
    with pytest.raises(UnknownItemError, match="'ghost'"):
        index.vectors_of(["item0", "ghost"])


def test_upsert_replaces_the_vector(rng, vectors):
    index = ItemIndex.build(ids_for(20), vectors[:20])
    target = rng.standard_normal((1, vectors.shape[1])).astype(np.float32)
    assert index.search(target, 1)[0][0][0] != "item5"
    index.add(["item5"], target, upsert=True)
    assert len(index) == 20
    assert index.search(target, 1)[0][0] == ("item5", pytest.approx(1.0, abs=1e-5))
    np.testing.assert_allclose(index.vectors_of(["item5"])[0], unit(target[0]), atol=1e-6)
    [result] = index.search(target, 20)
    assert [item_id for item_id, _ in result].count("item5") == 1


def test_removed_item_is_never_returned(vectors):
    index = ItemIndex.build(ids_for(30), vectors[:30])
    assert index.remove(["item7", "item7", "item9"]) == 2
    [result] = index.search(vectors[7:8], k=100)
    assert len(result) == 28 and not {"item7", "item9"} & {item_id for item_id, _ in result}
    assert "item7" not in index and len(index) == 28


def test_faiss_ids_are_not_reused_after_removal(vectors):
    index = ItemIndex.build(ids_for(5), vectors[:5])
    removed = {index._int_of["item3"], index._int_of["item4"]}
    index.remove(["item3", "item4"])
    index.add(["a", "b", "item3"], vectors[5:8])
    assert not removed & {index._int_of[i] for i in ("a", "b", "item3")}
    assert index.search(vectors[7:8], 1)[0][0][0] == "item3"  # re-added under a new number, new vector


def test_ids_and_vectors_of(vectors):
    index = ItemIndex.build(ids_for(5), vectors[:5])
    index.add(["x"], vectors[5:6])
    assert index.ids() == ["item0", "item1", "item2", "item3", "item4", "x"]
    np.testing.assert_allclose(index.vectors_of(["x", "item2"]), unit(vectors[[5, 2]]), atol=1e-6)
    assert index.vectors_of([]).shape == (0, vectors.shape[1])


def test_an_inner_product_index_searches_the_vectors_as_they_are(tmp_path) -> None:
    rows = np.array([[1.0, 0.0, 0.5], [3.0, 0.0, -2.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    index = ItemIndex.build(["a", "b", "c"], rows, metric="ip")
    user = np.array([[1.0, 0.5, 1.0]], dtype=np.float32)  # [u, 1]: u . v + b
    assert index.search(user, k=3)[0] == [("a", pytest.approx(1.5)), ("b", pytest.approx(1.0)),
                                          ("c", pytest.approx(0.5))]
    np.testing.assert_allclose(index.vectors_of(["b"]), rows[1:2])  # not normalized
    index.save(tmp_path)
    assert ItemIndex.load(tmp_path).search(user, k=1)[0][0][0] == "a"
    with pytest.raises(ValueError, match="no center with ip"):
        ItemIndex(3, metric="ip", center=np.zeros(3))
