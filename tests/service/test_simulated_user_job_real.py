"""The simulated-user job on the real SmolLM2 with the shipped table and judge (slow): two hot-added twins of
MovieLens films are asked about by three pool users each through the taught judge, and their served rows move from
their text rows by those answers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from service_helpers import ADMIN_TOKEN, admin_headers
from test_gateway_real import ml_catalog  # noqa: F401 (the fixture)

from indexer.core.catalog import PLACED_BY_TEXT, Catalog
from indexer.core.paths import SHIPPED
from indexer.store import ItemStore
from model.judge_pool import POOL_FILE, JudgePool
from model.networks.table_artifact import TableArtifact
from model.prompts import item_prompt
from service.settings import Settings
from service.simulated_users import ANSWERS_FILE

pytestmark = pytest.mark.slow

POOL = {"action": ["2", "22", "24", "27", "28", "33"], "family": ["1", "8", "21", "35"],
        "drama": ["6", "9", "10", "15", "19", "20"]}


def test_two_twins_are_refined_by_the_shipped_judge(serve, real_engine, ml_catalog: Catalog,  # noqa: F811
                                                    tmp_path: Path) -> None:
    table_dir = SHIPPED / "ml-100k" / "table"
    table = TableArtifact.load(table_dir)
    items = list(ml_catalog)
    rows = table.index_rows(items, real_engine.embed_items([item_prompt(i) for i in items]))
    ItemStore.create(ml_catalog, rows, real_engine.fingerprint, table=table.table_hash).save(tmp_path / "index")
    judge = Path(shutil.copytree(SHIPPED / "ml-100k" / "judge", tmp_path / "judge",
                                 ignore=shutil.ignore_patterns(POOL_FILE)))
    JudgePool.of({u: [(i, 5.0, None) for i in ids] for u, ids in POOL.items()}, {"test": True}).save(judge / POOL_FILE)
    settings = Settings(index_dir=tmp_path / "index", table=table_dir, judge=judge, judge_users_per_item=3,
                        admin_token=ADMIN_TOKEN, request_timeout_s=600, default_artifacts=False)
    server = serve(settings, real_engine)
    twins = [{"item_id": f"twin-{i}", "title": ml_catalog[i].title, "genres": list(ml_catalog[i].genres),
              "year": ml_catalog[i].year} for i in ("1", "22")]
    added = server.client.post("/admin/items", json={"items": twins}, headers=admin_headers())
    assert added.status_code == 200, added.text
    deadline = time.monotonic() + 600
    while True:
        placements = [server.client.get(f"/items/{t['item_id']}").json()["placement"] for t in twins]
        if all(p not in (None, PLACED_BY_TEXT) for p in placements):
            break
        assert time.monotonic() < deadline, placements
        time.sleep(1)
    # each asked of 3 users against the other: both are named in all 6 answers
    assert placements == ["text + 6 simulated-user answers"] * 2
    memory = json.loads((tmp_path / "index" / ANSWERS_FILE).read_text())
    answers = memory["answers"]
    assert len(answers) == 6 and {a[0] for a in answers} <= set(POOL)
    assert all(0 < a[3] < 1 for a in answers) and any(abs(a[3] - 0.5) > 1e-3 for a in answers)
    served = ItemStore.load(tmp_path / "index").vectors_of(["twin-1", "twin-22"])
    text = np.stack([memory["text_rows"][t["item_id"]] for t in twins])
    assert not np.allclose(served, text)  # moved by the answers
