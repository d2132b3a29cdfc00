"""Every error answers the one envelope with the right status and `param`; no input produces a 500."""

from __future__ import annotations

import json
import random

import pytest
from service_helpers import assert_error, history

OK_HISTORY = history("1", "2", "3")

RECOMMEND_422 = [
    ({"history": []}, "history"),
    ({"history": history(*[str(1 + i % 36) for i in range(201)])}, "history"),
    ({}, "history"),
    ({"history": [{"item_id": "1", "title": "Both"}]}, "history[0]"),
    ({"history": [{"rating": 4}]}, "history[0]"),
    ({"history": [*OK_HISTORY, {"item_id": "no-such-item"}]}, "history[3].item_id"),
    ({"history": [{"item_id": 5}]}, "history[0].item_id"),
    ({"history": [{"item_id": "i" * 129}]}, "history[0].item_id"),
    ({"history": [{"title": "t" * 301}]}, "history[0].title"),
    ({"history": [{"title": "   "}]}, "history[0].title"),
    ({"history": [{"item_id": "1", "rating": 6}]}, "history[0].rating"),
    ({"history": [{"item_id": "1", "rating": "five"}]}, "history[0].rating"),
    ({"history": [{"item_id": "1", "timestamp": 10**30}]}, "history[0].timestamp"),
    ({"history": [{"item_id": "1", "timestamp": -1}]}, "history[0].timestamp"),
    ({"history": [{"item_id": "1", "liked": True}]}, "history[0].liked"),
    ({"history": OK_HISTORY, "k": 0}, "k"),
    ({"history": OK_HISTORY, "k": 101}, "k"),
    ({"history": OK_HISTORY, "k": "ten"}, "k"),
    ({"history": OK_HISTORY, "k": 10**40}, "k"),
    ({"history": OK_HISTORY, "k": 2.5}, "k"),
    ({"history": OK_HISTORY, "ranker": "bert4rec"}, "ranker"),
    ({"history": OK_HISTORY, "max_reasoning_tokens": 33}, "max_reasoning_tokens"),
    ({"history": OK_HISTORY, "max_reasoning_tokens": 0}, "max_reasoning_tokens"),
    ({"history": OK_HISTORY, "exclude_history": "maybe"}, "exclude_history"),
    ({"history": OK_HISTORY, "user_id": "u" * 129}, "user_id"),
    ({"history": OK_HISTORY, "temperature": 1.5}, "temperature"),
    ({"history": {"item_id": "1"}}, "history"),
]


@pytest.mark.parametrize(("body", "param"), RECOMMEND_422, ids=[p for _, p in RECOMMEND_422])
def test_recommend_validation_names_the_field(gateway, body, param):
    error = assert_error(gateway.client.post("/recommend", json=body), 422, "invalid_request", param)
    assert error["message"].startswith(param)


@pytest.mark.parametrize(
    "raw",
    ['{"history": [', "not json", "", "[]", '"text"', "null", '{"history": [{"item_id": "1", "rating": NaN}]}',
     '{"history": [{"item_id": "1"}], "k": 1e400}', '{"history": [{"item_id": "1", "rating": Infinity}]}'],
)
def test_malformed_bodies_are_422(gateway, raw):
    response = gateway.client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request"


def test_non_json_content_type_is_422(gateway):
    response = gateway.client.post("/recommend", content="history=1", headers={"content-type": "text/plain"})
    assert_error(response, 422, "invalid_request")


def test_unknown_routes_and_methods(gateway):
    error = assert_error(gateway.client.get("/no/such/route"), 404, "not_found")
    assert "/no/such/route" in error["message"]
    response = gateway.client.get("/recommend")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert_error(gateway.client.put("/items/1"), 405, "method_not_allowed")
    assert_error(gateway.client.get("/items/" + "x" * 129), 422, "invalid_request", "item_id")


def _garbage(rng: random.Random, depth: int = 0) -> object:
    choices = [
        lambda: rng.choice([None, True, False, 0, -1, 2**70, 1e308, -1e-308, "", "1", "x" * 500, "\u0000\ud7ff"]),
        lambda: [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        lambda: {rng.choice(["history", "k", "ranker", "item_id", "title", "rating", "timestamp", "mode", "zz"]):
                 _garbage(rng, depth + 1) for _ in range(rng.randint(0, 4))},
    ]
    return choices[0]() if depth > 3 else rng.choice(choices)()


def test_random_bodies_never_make_a_500(gateway):
    rng = random.Random(7)
    paths = ["/recommend", "/rate"]
    for _ in range(150):
        body = json.dumps(_garbage(rng))
        response = gateway.client.post(rng.choice(paths), content=body, headers={"content-type": "application/json"})
        assert response.status_code in (200, 422), (body, response.text)
        assert "error" in response.json() or response.status_code == 200
