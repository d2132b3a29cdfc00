"""The simulated-user job through the gateway (`REASONREC_JUDGE`, service.simulated_users) on the tiny model and a
tiny table: a lone hot-added item keeps its text placement; two are asked about, their rows are refined from their
text rows by the judge's answers exactly as `refine_rows` computes it (warm rows untouched) and their placement
says how many answers moved them; a restart asks nothing twice; an upserted text is placed by its text again and
asked about anew; an unreadable memory is kept aside; the settings the job cannot run with are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from service_helpers import admin_headers, tiny_settings
from test_table_serving import make_table

from indexer.core.catalog import PLACED_BY_TEXT, Catalog
from indexer.store import ItemStore
from model.engines.loading import ADAPTER_META, load_model
from model.judge_pool import POOL_FILE, JudgePool
from model.networks.preference_rows import Preferences, refine_rows
from model.prompts import UserHistory, item_prompt
from model.rankers.table import history_rows, user_vectors
from service.settings import Settings
from service.simulated_users import ANSWERS_FILE, REFINE_LR, REFINE_STEPS, refined_placement
from service.startup import resolve
from trainer.train.lora import LoraSettings, add_lora

POOL = {"u1": ["3", "7", "12"], "u2": ["1", "2", "5", "9"], "u3": ["20", "21"], "u4": ["30", "31", "33", "8"]}


@pytest.fixture
def judged(tiny_engine, catalog: Catalog, tmp_path: Path) -> Settings:
    """Settings of a gateway with a tiny table, its index and a judge folder (an untrained tiny LoRA adapter, as
    `reasonrec train-judge` saves it, and a pool of four users of the catalog)."""
    table = make_table(tiny_engine, catalog, tmp_path / "table")
    items = list(catalog)
    rows = table.index_rows(items, tiny_engine.embed_items([item_prompt(i) for i in items]))
    ItemStore.create(catalog, rows, tiny_engine.fingerprint, table=table.table_hash).save(tmp_path / "index")
    judge = tmp_path / "judge"
    torch.manual_seed(0)
    add_lora(load_model("tiny").model, LoraSettings(model="tiny", lora_dropout=0.0)).save_pretrained(judge)
    (judge / ADAPTER_META).write_text(json.dumps({"status": "done"}))
    JudgePool.of({u: [(i, 4.0, None) for i in ids] for u, ids in POOL.items()}, {"test": True}).save(judge / POOL_FILE)
    return tiny_settings(tmp_path / "index", table=tmp_path / "table", judge=judge, judge_users_per_item=3,
                         judge_l2=0.1)


def _placement(server, item_id: str) -> str | None:
    return server.client.get(f"/items/{item_id}").json()["placement"]


def _wait_for(server, item_ids: list[str], placement: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_placement(server, i) != placement for i in item_ids):
        assert time.monotonic() < deadline, [_placement(server, i) for i in item_ids]
        time.sleep(0.2)


def _add(server, *items: dict) -> None:
    response = server.client.post("/admin/items", json={"items": list(items), "upsert": True},
                                  headers=admin_headers())
    assert response.status_code == 200, response.text


NEW = [{"item_id": f"new-{k}", "title": f"A Film Added Today {k} (2026)", "genres": ["Drama"], "year": 2026}
       for k in range(3)]


def test_hot_added_items_are_refined_by_the_judges_answers(serve, tiny_engine, judged: Settings) -> None:
    server = serve(judged, tiny_engine)
    before = ItemStore.load(judged.index_dir)
    _add(server, NEW[0])
    time.sleep(1.0)  # the job looked: a lone item has no pair to be asked about
    assert _placement(server, "new-0") == PLACED_BY_TEXT and _placement(server, "3") is None
    assert not (judged.index_dir / ANSWERS_FILE).exists()
    text_rows = ItemStore.load(judged.index_dir).vectors_of(["new-0"])

    _add(server, NEW[1], NEW[2])
    memory = judged.index_dir / ANSWERS_FILE
    deadline = time.monotonic() + 60
    while not memory.exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    saved = json.loads(memory.read_text())
    answers = saved["answers"]
    counts = {i: sum(i in (a[1], a[2]) for a in answers) for i in ("new-0", "new-1", "new-2")}
    for item_id, count in counts.items():
        _wait_for(server, [item_id], refined_placement(count))
    assert len(answers) == 3 * 3 and all(a[0] in POOL for a in answers)  # 3 users for each of the 3 items
    np.testing.assert_allclose(saved["text_rows"]["new-0"], text_rows[0], atol=1e-6)

    store = ItemStore.load(judged.index_dir)
    items = sorted(counts)
    users = sorted({a[0] for a in answers})
    table = resolve(judged, tiny_engine).table
    histories = [history_rows(before, _pool_history(before, u), table.model.config.max_len, None, table)
                 for u in users]
    pairs = Preferences.of_answers([(users.index(a[0]), items.index(a[1]), items.index(a[2]), a[3])
                                    for a in answers])
    expected = refine_rows(torch.tensor(np.stack([saved["text_rows"][i] for i in items])),
                           torch.from_numpy(user_vectors(table, histories)), pairs, REFINE_STEPS, REFINE_LR,
                           judged.judge_l2)
    np.testing.assert_allclose(store.vectors_of(items), expected.numpy(), atol=1e-5)
    assert not np.allclose(store.vectors_of(items), np.stack([saved["text_rows"][i] for i in items]))
    warm = before.catalog.ids()
    np.testing.assert_array_equal(store.vectors_of(warm), before.vectors_of(warm))

    server.stop()  # a restart: nothing is pending, nothing is asked again
    server = serve(judged, tiny_engine)
    time.sleep(1.0)
    assert json.loads(memory.read_text())["answers"] == answers
    assert _placement(server, "new-0") == refined_placement(counts["new-0"])

    _add(server, {**NEW[0], "title": "A Film Renamed Today (2026)"})  # new text: placed by it, asked anew
    deadline = time.monotonic() + 60
    while True:
        renewed = json.loads(memory.read_text())["answers"]
        if renewed != answers and _placement(server, "new-0") != PLACED_BY_TEXT:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert [a for a in answers if "new-0" not in (a[1], a[2])] == renewed[: len(renewed) - 3]
    assert server.client.get("/items/new-0").json()["title"] == "A Film Renamed Today (2026)"


def test_an_unreadable_memory_is_kept_aside_and_the_job_goes_on(serve, tiny_engine, judged: Settings) -> None:
    memory = judged.index_dir / ANSWERS_FILE
    memory.write_text("{not json")
    server = serve(judged, tiny_engine)
    _add(server, NEW[0], NEW[1])
    _wait_for(server, ["new-0", "new-1"], refined_placement(6))  # 3 users for each, both named in all 6
    assert (judged.index_dir / (ANSWERS_FILE + ".unreadable")).read_text() == "{not json"
    assert len(json.loads(memory.read_text())["answers"]) == 6


def _pool_history(store: ItemStore, user: str) -> UserHistory:
    return UserHistory.of_items([(i, 4.0, None) for i in POOL[user]], store.catalog)


def test_the_job_is_refused_where_it_cannot_run(tiny_engine, judged: Settings, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CATALOG_SYNC"):
        Settings(**{**judged.model_dump(), "catalog_sync": True, "redis_url": "redis://127.0.0.1:6379/0"})
    with pytest.raises(ValueError, match="needs REASONREC_TABLE"):
        resolve(judged.model_copy(update={"table": None}), tiny_engine)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished adapter"):
        resolve(judged.model_copy(update={"judge": tmp_path / "empty"}), tiny_engine)
    (judged.judge / POOL_FILE).write_text("{}")
    with pytest.raises(ValueError, match="not a judge pool"):
        resolve(judged, tiny_engine)
