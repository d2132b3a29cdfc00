"""Admin writes are saved and live, or neither: a save that fails (here a write that raises ENOSPC, as a full
disk does) leaves the served index as it was on disk and answers 503, and the retry succeeds instead of 409.
An engine that cannot encode the new items is a 503 that changes nothing."""

from __future__ import annotations

import errno

import pytest
from service_helpers import admin_headers, assert_error, history, tiny_settings

import indexer.store

NEW = {"item_id": "unsaved-1", "title": "An Item The Disk Refused", "genres": ["Drama"], "year": 2026}


@pytest.fixture
def full_disk(monkeypatch):
    """While on, writing an index version's manifest fails as on a full disk; `full_disk(False)` frees it."""
    real = indexer.store.write_json

    def refuse(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def switch(on: bool = True) -> None:
        monkeypatch.setattr(indexer.store, "write_json", refuse if on else real)

    return switch


def served_ids(server) -> set[str]:
    body = {"history": history("1"), "k": 100, "ranker": "direct", "exclude_history": False}
    return {i["item_id"] for i in server.client.post("/recommend", json=body).json()["items"]}


def test_a_failed_save_undoes_the_add_and_the_retry_succeeds(serve, index_dir, tiny_engine, full_disk):
    server = serve(tiny_settings(index_dir), tiny_engine)
    full_disk()
    refused = server.client.post("/admin/items", json={"items": [NEW]}, headers=admin_headers())
    error = assert_error(refused, 503, "not_ready")
    assert "No space left on device" in error["message"] and "not made" in error["message"]
    assert_error(server.client.get("/items/unsaved-1"), 404, "not_found", "item_id")
    assert "unsaved-1" not in served_ids(server)
    assert server.client.get("/readyz").json()["index_version"] == 1

    full_disk(False)
    retried = server.client.post("/admin/items", json={"items": [NEW]}, headers=admin_headers())
    assert retried.status_code == 200, retried.text
    assert "unsaved-1" in served_ids(server)
    server.stop()
    restarted = serve(tiny_settings(index_dir), tiny_engine)
    assert restarted.client.get("/items/unsaved-1").status_code == 200


def test_a_failed_save_undoes_the_delete(serve, index_dir, tiny_engine, full_disk):
    server = serve(tiny_settings(index_dir), tiny_engine)
    full_disk()
    assert_error(server.client.delete("/admin/items/5", headers=admin_headers()), 503, "not_ready")
    assert server.client.get("/items/5").status_code == 200 and "5" in served_ids(server)
    full_disk(False)
    assert server.client.delete("/admin/items/5", headers=admin_headers()).json()["index_version"] == 2


def test_an_engine_that_cannot_encode_is_a_503_that_adds_nothing(serve, index_dir, faulty_engine):
    faulty_engine.error = RuntimeError("encoder exploded")
    server = serve(tiny_settings(index_dir), faulty_engine)
    error = assert_error(server.client.post("/admin/items", json={"items": [NEW]}, headers=admin_headers()), 503,
                         "not_ready")
    assert "RuntimeError" in error["message"] and "encoder exploded" not in error["message"]
    assert server.client.get("/items/unsaved-1").status_code == 404
