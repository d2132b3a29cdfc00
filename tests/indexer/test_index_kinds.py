"""The approximate kinds: IVF and HNSW recall@10 against the exact flat index, removal, and the exact-k promise."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer.index import IndexOptions, ItemIndex

N, DIM, K = 5000, 64, 10
OPTIONS = {
    "ivf": IndexOptions(nprobe=8),  # of ~128 lists
    "hnsw": IndexOptions(hnsw_m=16, ef_construction=64, ef_search=64),
}


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Random vectors around random centres (items that form genres), noise as large as the centres."""
    return (centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, np.ndarray, ItemIndex]:
    rng = np.random.default_rng(42)
    centres = rng.standard_normal((50, DIM))
    items, queries = clustered(rng, N, centres), clustered(rng, 200, centres)
    ids = [f"item{i}" for i in range(N)]
    return ids, items, queries, ItemIndex.build(ids, items)


def recall(approx: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> float:
    hits = [len({i for i, _ in a} & {i for i, _ in e}) / len(e) for a, e in zip(approx, exact, strict=False)]
    return float(np.mean(hits))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_recall_at_10_against_flat(data, kind):
    ids, items, queries, flat = data
    index = ItemIndex.build(ids, items, kind=kind, options=OPTIONS[kind])
    exact, approx = flat.search(queries, K), index.search(queries, K)
    assert recall(approx, exact) >= 0.9
    assert all(len(result) == K for result in approx)
    exact_scores = {(row, i): s for row, result in enumerate(exact) for i, s in result}
    for row, result in enumerate(approx):  # approximate search, exact cosine scores
        for item_id, score in result:
            if (row, item_id) in exact_scores:
                assert score == pytest.approx(exact_scores[row, item_id], abs=1e-5)


def test_ivf_with_one_probe_still_returns_exactly_k_despite_exclusions(data):
    ids, items, queries, flat = data
    index = ItemIndex.build(ids[:400], items[:400], kind="ivf", options=IndexOptions(nlist=10, nprobe=1))
    exclude = [{i for i, _ in result} for result in flat.search(queries[:20], 300)]
    results = index.search(queries[:20], 50, exclude=exclude)
    for result, excluded in zip(results, exclude, strict=False):
        allowed = 400 - len(excluded & set(ids[:400]))
        assert len(result) == min(50, allowed)
        assert not excluded & {i for i, _ in result}


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_remove_and_upsert(data, kind):
    ids, items, queries, _ = data
    ids, items = ids[:600], items[:600]
    index = ItemIndex.build(ids, items, kind=kind, options=OPTIONS[kind])
    top = [i for i, _ in index.search(queries[:5], 3)[0]]
    assert index.remove(top) == 3
    assert len(index) == 597 and not set(top) & set(index.ids())
    results = index.search(queries[:5], 600)
    assert all(len(result) == 597 and not set(top) & {i for i, _ in result} for result in results)
    np.testing.assert_allclose(
        index.vectors_of(["item10"])[0], items[10] / np.linalg.norm(items[10]), atol=1e-6
    )
    index.add(["item10"], queries[:1], upsert=True)
    assert index.search(queries[:1], 1)[0][0] == ("item10", pytest.approx(1.0, abs=1e-5))
    assert len(index) == 597


def test_hnsw_removal_keeps_the_search_settings(data):
    ids, items, _, _ = data
    options = IndexOptions(hnsw_m=8, ef_construction=16, ef_search=40)
    index = ItemIndex.build(ids[:100], items[:100], kind="hnsw", options=options)
    index.remove(["item0"])
    assert index.options == options
    hnsw = faiss.downcast_index(index._faiss.index).hnsw  # the rebuilt graph
    assert (hnsw.efConstruction, hnsw.nb_neighbors(1)) == (16, 8)


def test_ivf_needs_training_vectors(data):
    ids, items, _, _ = data
    with pytest.raises(ValueError, match="nlist=64 needs at least 64 training vectors, got 10"):
        ItemIndex.build(ids[:10], items[:10], kind="ivf", options=IndexOptions(nlist=64))
    with pytest.raises(ValueError, match="must be trained"):
        ItemIndex(DIM, kind="ivf").add(["a"], items[:1])
    with pytest.raises(ValueError, match="index kind must be one of"):
        ItemIndex(DIM, kind="annoy")
