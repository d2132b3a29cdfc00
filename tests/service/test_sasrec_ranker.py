"""The `sasrec` ranker through the real gateway: same ranking as the scorer, honest notes about items it cannot
score (hot-added ones), 503 without a checkpoint, and its role as the fallback ranker."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import (
    admin_headers,
    assert_error,
    history,
    popular_order,
    tiny_settings,
    write_sasrec_checkpoint,
)

from model.networks.sasrec import SasrecScorer

UNSEEN = {"7", "8"}  # catalog items the checkpoint never saw in training
GONE = "999"  # an item the checkpoint knows that the catalog does not have


@pytest.fixture()
def checkpoint(catalog, tmp_path) -> Path:
    return write_sasrec_checkpoint(tmp_path / "sasrec", [i for i in catalog.ids() if i not in UNSEEN] + [GONE])


def test_sasrec_ranks_like_its_scorer_and_says_what_it_cannot_score(serve, index_dir, checkpoint, tiny_engine):
    server = serve(tiny_settings(index_dir, sasrec_checkpoint=checkpoint), tiny_engine)
    body = {"history": history("1", "2", "3"), "k": 10, "ranker": "sasrec"}
    data = server.client.post("/recommend", json=body).json()
    expected = SasrecScorer.load(checkpoint).top_k(["1", "2", "3"], 10, exclude={"1", "2", "3", GONE})
    assert data["ranker"] == "sasrec" and data["fallback"] is None and data["reasoning"] is None
    assert [(i["item_id"], pytest.approx(i["score"], abs=1e-5)) for i in data["items"]] == expected
    assert not {i["item_id"] for i in data["items"]} & (UNSEEN | {GONE})
    assert any("cannot score 2 catalog item" in note for note in data["notes"])

    added = {"items": [{"item_id": "fresh", "title": "Fresh", "genres": ["Drama"]}]}
    assert server.client.post("/admin/items", json=added, headers=admin_headers()).status_code == 200
    data = server.client.post("/recommend", json={**body, "k": 100}).json()
    assert "fresh" not in {i["item_id"] for i in data["items"]}
    assert any("cannot score 3 catalog item" in note for note in data["notes"])

    unknown_history = {"history": history("7", "1"), "k": 3, "ranker": "sasrec"}
    notes = server.client.post("/recommend", json=unknown_history).json()["notes"]
    assert any("skipped 1 history item" in note for note in notes)


def test_sasrec_without_checkpoint_is_a_503_naming_the_ranker(serve, index_dir, tiny_engine):
    server = serve(tiny_settings(index_dir), tiny_engine)
    response = server.client.post("/recommend", json={"history": history("1"), "ranker": "sasrec"})
    assert "train-sasrec" in assert_error(response, 503, "not_ready", "ranker")["message"]


def test_engine_timeout_falls_back_to_sasrec_then_to_popular_without_it(
    serve, index_dir, checkpoint, faulty_engine, catalog
):
    faulty_engine.error = RuntimeError("engine died")
    body = {"history": history("1", "2"), "k": 5, "ranker": "direct"}
    with_sasrec = serve(tiny_settings(index_dir, sasrec_checkpoint=checkpoint), faulty_engine)
    data = with_sasrec.client.post("/recommend", json=body).json()
    assert data["fallback"] == "engine_error" and data["ranker"] == "sasrec"
    assert [i["item_id"] for i in data["items"]] == [
        i for i, _ in SasrecScorer.load(checkpoint).top_k(["1", "2"], 5, exclude={"1", "2", GONE})]
    without = serve(tiny_settings(index_dir), faulty_engine)
    data = without.client.post("/recommend", json=body).json()
    assert data["fallback"] == "engine_error" and data["ranker"] == "popular"
    assert [i["item_id"] for i in data["items"]] == [i for i in popular_order(catalog) if i not in "12"][:5]
