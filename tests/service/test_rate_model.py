"""POST /rate served by the rating model through the real gateway: the model's rating with grounded reasoning whose
every claim checks, the direct mode, hot-added items, the LLM ablation, and how `reasonrec serve` finds the model."""

from __future__ import annotations

import numpy as np
import pytest
from service_helpers import ADMIN_TOKEN, admin_headers, tiny_settings

from indexer.core.paths import rating_dir
from model.prompts import UserHistory
from model.rating.checks import check_reasoning
from model.rating.factors import RatingModel
from model.rating.reasons import rounded
from service.settings import Settings
from service.startup import default_artifacts, load_rating_model

HISTORY = [{"item_id": "3", "rating": 5.0, "timestamp": 1_700_000_000},
           {"item_id": "12", "rating": 2.0, "timestamp": 1_700_003_600},
           {"item_id": "21", "rating": 4.0, "timestamp": 1_700_007_200},
           {"item_id": "30", "rating": 1.0, "timestamp": 1_700_010_800},
           {"title": "A film outside the catalog", "rating": 3.0}]


def rating_model(catalog, folder) -> RatingModel:
    rng = np.random.default_rng(0)
    ids = catalog.ids()
    model = RatingModel(ids, 3.55, rng.normal(0, 0.4, len(ids)), rng.normal(0, 0.3, (len(ids), 4)), 5.0, 2.0)
    model.save(folder, {"status": "done", "command": "test"})
    return RatingModel.load(folder)


def expected(model: RatingModel, item_id: str) -> float:
    entries = [e for e in HISTORY if "item_id" in e]
    b_u, p_u = model.fold_in([e["item_id"] for e in entries], [e["rating"] for e in entries])
    return float(model.predict(b_u, p_u, [item_id])[0])


@pytest.fixture
def served(serve, index_dir, tiny_engine, catalog, tmp_path):
    model = rating_model(catalog, tmp_path / "rating")
    return serve(tiny_settings(index_dir, rating_model=tmp_path / "rating"), tiny_engine), model


def test_rate_returns_the_models_rating_with_grounded_reasoning(served, catalog):
    server, model = served
    data = server.client.post("/rate", json={"history": HISTORY, "item_id": "7"}).json()
    assert data["rating"] == pytest.approx(expected(model, "7"), abs=1e-9)
    assert data["parsed"] is True and data["cached"] is False and data["fallback"] is None
    assert data["timings_ms"]["cache"] is None and data["timings_ms"]["rating"] < 100
    history = UserHistory.of_items([(e["item_id"], e["rating"], e["timestamp"]) for e in HISTORY[:4]], catalog)
    history = UserHistory((*history.lines, type(history.lines[0])("A film outside the catalog", 3.0, None)),
                          (*history.item_ids, None))
    checks = check_reasoning(data["reasoning"], history, catalog, catalog["7"], model.mean, data["rating"])
    assert all(c.ok for c in checks) and len(checks) >= 5, checks
    assert "The user rated 5 items, average 3.00" in data["reasoning"]
    direct = server.client.post("/rate", json={"history": HISTORY, "item_id": "7", "mode": "direct"}).json()
    assert direct["reasoning"] == f"<rate>{rounded(data['rating'])}</rate>" and direct["rating"] == data["rating"]


def test_a_hot_added_item_gets_the_users_part_only(served):
    server, model = served
    added = server.client.post("/admin/items", headers=admin_headers(ADMIN_TOKEN),
                               json={"items": [{"item_id": "new-1", "title": "Rogue Moon", "genres": ["Sci-Fi"]}]})
    assert added.status_code == 200, added.text
    data = server.client.post("/rate", json={"history": HISTORY, "item_id": "new-1"}).json()
    entries = [e for e in HISTORY if "item_id" in e]
    b_u, _ = model.fold_in([e["item_id"] for e in entries], [e["rating"] for e in entries])
    assert data["rating"] == pytest.approx(min(5.0, max(1.0, model.mean + b_u)))
    assert "No ratings yet." in data["reasoning"] and data["parsed"] is True


def test_rate_with_llm_keeps_the_guided_rating(serve, index_dir, tiny_engine, catalog, tmp_path):
    rating_model(catalog, tmp_path / "rating")
    server = serve(tiny_settings(index_dir, rating_model=tmp_path / "rating", rate_with="llm"), tiny_engine)
    data = server.client.post("/rate", json={"history": HISTORY, "item_id": "7", "mode": "direct"}).json()
    assert data["timings_ms"]["cache"] is not None and data["parsed"] is True
    assert "Predicted rating" not in (data["reasoning"] or "")


def test_a_model_with_a_head_is_not_served(catalog, tmp_path):
    model = rating_model(catalog, tmp_path / "rating")
    model.head = np.zeros(9)
    model.save(tmp_path / "head", {"status": "done"})
    with pytest.raises(ValueError, match="head"):
        load_rating_model(Settings(model="tiny", rating_model=tmp_path / "head"))


def test_serve_fills_in_the_finished_rating_model(tiny_engine, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path))
    settings = Settings(model="tiny", dataset="ml-test")
    assert default_artifacts(settings, tiny_engine).rating_model is None
    RatingModel(catalog.ids(), 3.5, np.zeros(len(catalog)), np.zeros((len(catalog), 0)), 1.0, 1.0).save(
        rating_dir("ml-test"), {"status": "training"})
    assert default_artifacts(settings, tiny_engine).rating_model is None  # not finished
    rating_model(catalog, rating_dir("ml-test"))
    assert default_artifacts(settings, tiny_engine).rating_model == rating_dir("ml-test")
