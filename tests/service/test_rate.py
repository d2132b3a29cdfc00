"""POST /rate end to end: guided RecZero tags, cached ratings, the direct mode, the average fallback."""

from __future__ import annotations

import re

from service_helpers import assert_error, history, tiny_settings

from model.prompts import RATING_TAGS

TAGGED = re.compile(
    r"^<analyze user>.+</analyze user>\n<analyze item>.+</analyze item>\n<match>.+</match>\n<rate>[1-5]</rate>$",
    re.DOTALL,
)


def test_reasoning_rating_has_the_four_tags_and_is_cached(gateway):
    body = {"history": history("1", "2", "3"), "item_id": "10"}
    first = gateway.client.post("/rate", json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert 1.0 <= data["rating"] <= 5.0 and data["parsed"] is True and data["fallback"] is None
    assert TAGGED.match(data["reasoning"]), data["reasoning"]
    assert all(data["reasoning"].count(f"<{tag}>") == 1 for tag in RATING_TAGS)
    assert data["cached"] is False and data["timings_ms"]["rating"] > 0
    again = gateway.client.post("/rate", json=body).json()
    assert again["cached"] is True and again["rating"] == data["rating"] and again["reasoning"] == data["reasoning"]
    assert again["timings_ms"]["rating"] is None


def test_direct_rating_is_only_the_rate_tag(gateway):
    data = gateway.client.post("/rate", json={"history": history("1"), "item_id": "2", "mode": "direct"}).json()
    assert re.fullmatch(r"<rate>[1-5]</rate>", data["reasoning"]) and data["parsed"] is True
    assert 1.0 <= data["rating"] <= 5.0


def test_stray_tags_from_the_engine_are_cut_and_the_answer_still_parses(serve, index_dir, faulty_engine):
    # The small model writes later tags early; guiding cuts each tag's text there, so the format holds.
    # (The estimate-with-parsed-false path is the engine failure path, covered in test_faults.py.)
    faulty_engine.garble = "likes space <rate>2</rate> inside the reasoning"
    server = serve(tiny_settings(index_dir), faulty_engine)
    data = server.client.post("/rate", json={"history": history("1", rating=1.0), "item_id": "5"}).json()
    assert data["parsed"] is True and data["reasoning"].count("<rate>") == 1
    assert data["reasoning"].startswith("<analyze user>likes space</analyze user>")


def test_rate_validation(gateway):
    assert_error(gateway.client.post("/rate", json={"history": history("1"), "item_id": "nope"}), 422,
                 "invalid_request", "item_id")
    assert_error(gateway.client.post("/rate", json={"history": history("1", "zz"), "item_id": "2"}), 422,
                 "invalid_request", "history[1].item_id")
    assert_error(gateway.client.post("/rate", json={"history": history("1"), "item_id": "2", "mode": "free"}), 422,
                 "invalid_request", "mode")
    assert_error(gateway.client.post("/rate", json={"history": history("1")}), 422, "invalid_request", "item_id")
