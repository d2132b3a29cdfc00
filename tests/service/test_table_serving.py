"""The gateway with an item table (`REASONREC_TABLE`): direct answers u = s(history) + f(h) against the table's
rows exactly as the ranker core computes it, a hot-added item is placed through g by its text (a twin of an
existing item lands next to it), titles outside the catalog reach the model's prompt and stay out of `s`, and an
index of another table is refused; with the cold-slot gate a hot-added item takes the last place."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from service_helpers import admin_headers, history, tiny_settings

from indexer.core.catalog import Catalog
from indexer.store import ItemStore
from model.engines.transformers_engine import TransformersEngine
from model.networks.item_features import ContentFeaturizer, FeatureSpec
from model.networks.item_table import TableConfig, TableModel
from model.networks.table_artifact import TableArtifact
from model.prompts import HistoryLine, UserHistory, item_prompt
from model.rankers.cold_slots import ColdSlots
from model.rankers.llm import LlmRanker


def make_table(engine: TransformersEngine, catalog: Catalog, folder: Path, seed: int = 0) -> TableArtifact:
    """An untrained table with a head over the catalog (LLM item states only), saved as `train-table` would."""
    torch.manual_seed(seed)
    items = list(catalog)
    config = TableConfig(len(items), engine.hidden_size, engine.hidden_size, dim=8, content_hidden=16, max_len=20)
    model = TableModel(config, torch.ones(len(items), dtype=torch.bool)).eval()
    torch.nn.init.normal_(model.head[1].weight, std=0.1)  # a head that changes the ranking
    torch.nn.init.normal_(model.content_map.net[-1].weight, std=1.0)  # a g that places items (residuals: .02)
    center = engine.embed_items([item_prompt(i) for i in items]).mean(axis=0)
    table = TableArtifact(model, [i.item_id for i in items], FeatureSpec(llm=True, minilm=False), center,
                          engine.fingerprint, {})
    table.save(folder, {"status": "done", "config": {"protocol": "leave-one-out"}})
    return TableArtifact.load(folder)


@pytest.fixture
def served_table(tiny_engine, catalog, tmp_path) -> tuple[TableArtifact, Path, Path]:
    table = make_table(tiny_engine, catalog, tmp_path / "table")
    items = list(catalog)
    rows = table.index_rows(items, tiny_engine.embed_items([item_prompt(i) for i in items]))
    ItemStore.create(catalog, rows, tiny_engine.fingerprint, table=table.table_hash).save(tmp_path / "index")
    return table, tmp_path / "table", tmp_path / "index"


def test_direct_ranks_with_the_table_as_the_core_computes_it(serve, tiny_engine, served_table) -> None:
    table, folder, index = served_table
    server = serve(tiny_settings(index, table=folder), tiny_engine)
    body = {"history": history("3", "7", "12"), "k": 5, "ranker": "direct"}
    data = server.client.post("/recommend", json=body).json()
    assert data["ranker"] == "direct" and data["fallback"] is None, data
    store = ItemStore.load(index)
    user = UserHistory.of_items([("3", 4.0, None), ("7", 4.0, None), ("12", 4.0, None)], store.catalog)
    core = LlmRanker("direct", tiny_engine, table)
    states = tiny_engine.embed_direct([core.prompt(
        UserHistory(tuple(replace(line, timestamp=ts) for line, ts in
                          zip(user.lines, (1_700_000_000, 1_700_003_600, 1_700_007_200), strict=True)),
                    user.item_ids))])
    expected = core.search(store, [user], states, 5, [{"3", "7", "12"}])[0]
    assert [(i["item_id"], pytest.approx(i["score"], abs=1e-4)) for i in data["items"]] == expected
    without_head = LlmRanker("direct", tiny_engine, table, head="none").search(store, [user], states, 5,
                                                                                [{"3", "7", "12"}])[0]
    assert [i for i, _ in without_head] != [i["item_id"] for i in data["items"]]  # f(h) changes the ranking


def test_a_hot_added_twin_is_placed_by_its_text_next_to_its_original(serve, tiny_engine, served_table,
                                                                      catalog) -> None:
    table, folder, index = served_table
    server = serve(tiny_settings(index, table=folder), tiny_engine)
    original = catalog["5"]
    twin = {"item_id": "twin-5", "title": original.title, "genres": list(original.genres), "year": original.year}
    assert server.client.post("/admin/items", json={"items": [twin]}, headers=admin_headers()).status_code == 200
    server.stop()
    store = ItemStore.load(index)
    featurizer = ContentFeaturizer(table.spec, tiny_engine, None, table.center)
    np.testing.assert_allclose(store.vectors_of(["twin-5"]), table.content_rows(featurizer.features([original])),
                               atol=1e-5)  # the content part of its original's row: no residual
    vectors = store.vectors_of(store.catalog.ids())[:, :-1]
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = store.catalog.ids()
    nearest = [ids[j] for j in np.argsort(-(units @ units[ids.index("5")]))[1:6]]
    assert "twin-5" in nearest


def test_a_title_outside_the_catalog_is_read_by_the_model_and_left_out_of_s(serve, tiny_engine,
                                                                           served_table) -> None:
    table, folder, index = served_table
    server = serve(tiny_settings(index, table=folder), tiny_engine)
    body = {"history": [{"title": "A Film Nobody Indexed (1999)", "rating": 5}], "k": 3, "ranker": "direct"}
    data = server.client.post("/recommend", json=body).json()
    assert data["ranker"] == "direct" and len(data["items"]) == 3, data
    assert any("title only are left out of s(history)" in note for note in data["notes"]), data["notes"]
    store = ItemStore.load(index)
    core = LlmRanker("direct", tiny_engine, table)
    with_title = UserHistory((HistoryLine("A Film Nobody Indexed (1999)"), HistoryLine("x")), (None, "3"))
    without = UserHistory((HistoryLine("x"),), ("3",))
    assert "A Film Nobody Indexed" in core.prompt(with_title)  # the model reads it
    states = tiny_engine.embed_direct([core.prompt(with_title)])
    found = [core.search(store, [h], states, 5, [{"3"}])[0] for h in (with_title, without)]
    assert found[0] == found[1]  # s reads the catalog's items only


def test_an_index_of_another_table_is_refused(serve, tiny_engine, catalog, served_table, tmp_path) -> None:
    _, _, index = served_table
    other = make_table(tiny_engine, catalog, tmp_path / "other", seed=1)
    server = serve(tiny_settings(index, table=tmp_path / "other"), tiny_engine)
    ready = server.client.get("/readyz")
    assert ready.status_code == 503 and "table" in ready.text and other.table_hash in ready.text


def test_a_zero_head_means_direct_runs_no_forward_pass_and_says_so(serve, tiny_engine, served_table, catalog,
                                                                   tmp_path) -> None:
    """The served head kept its zero start (as on ML-100k and ML-1M): `direct` is s(history) alone, so it answers
    without calling the engine, with the table ranker's list and a note; `reasoning` still reasons, and says its
    state adds nothing."""
    from engine_doubles import GatedEngine

    from model.rankers.table import TableRanker

    table, _, index = served_table
    torch.nn.init.zeros_(table.model.head[1].weight)
    torch.nn.init.zeros_(table.model.head[1].bias)
    table.save(tmp_path / "zero-head", {**table.meta, "status": "done"})
    store = ItemStore.load(index)
    rows = table.index_rows(list(catalog), tiny_engine.embed_items([item_prompt(i) for i in catalog]))
    zero = TableArtifact.load(tmp_path / "zero-head")
    ItemStore.create(catalog, rows, tiny_engine.fingerprint, table=zero.table_hash).save(tmp_path / "zero-index")
    engine = GatedEngine(tiny_engine)
    server = serve(tiny_settings(tmp_path / "zero-index", table=tmp_path / "zero-head"), engine)
    data = server.client.post("/recommend", json={"history": history("3", "7", "12"), "k": 5,
                                                  "ranker": "direct"}).json()
    assert data["ranker"] == "direct" and data["fallback"] is None and engine.calls == []
    assert any("no forward pass" in note for note in data["notes"])
    user = UserHistory.of_items([("3", 4.0, None), ("7", 4.0, None), ("12", 4.0, None)], store.catalog)
    alone = TableRanker(zero, ItemStore.load(tmp_path / "zero-index")).top_k(user, 5, {"3", "7", "12"})
    assert [(i["item_id"], pytest.approx(i["score"], abs=1e-4)) for i in data["items"]] == alone
    reasoning = server.client.post("/recommend", json={"history": history("3", "7", "12"), "k": 5,
                                                       "ranker": "reasoning"}).json()
    assert [method for method, _ in engine.calls] == ["reason"] and reasoning["reasoning"] is not None
    assert any("does not enter the score" in note for note in reasoning["notes"])
    assert [i["item_id"] for i in reasoning["items"]] == [i for i, _ in alone]


def test_a_hot_added_item_takes_the_last_place_through_the_cold_slots(serve, tiny_engine, served_table,
                                                                      catalog) -> None:
    table, folder, index = served_table
    table.save(folder, {**table.meta, "cold_slots": ColdSlots(1, math.inf).to_meta()})  # the gate train-table fits
    server = serve(tiny_settings(index, table=folder), tiny_engine)
    body = {"history": history("3", "7", "12"), "k": 5, "ranker": "direct"}
    before = server.client.post("/recommend", json=body).json()
    new = {"item_id": "new-1", "title": "A Film Added Today (2026)", "genres": ["Drama"], "year": 2026}
    assert server.client.post("/admin/items", json={"items": [new]}, headers=admin_headers()).status_code == 200
    after = server.client.post("/recommend", json=body).json()
    ids_before, ids_after = ([i["item_id"] for i in r["items"]] for r in (before, after))
    # the only item without interactions: it takes the last place (unless it made the list on its own score)
    assert "new-1" not in ids_before and "new-1" in ids_after, after
    if ids_after[-1] == "new-1":
        assert ids_after[:-1] == ids_before[:-1]
    assert any("placed by their text alone" in note for note in after["notes"]), after["notes"]
    scores = [i["score"] for i in after["items"]]
    assert scores == sorted(scores, reverse=True)
