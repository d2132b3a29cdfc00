"""The main flow on the real SmolLM2 with the settings `make serve` uses, on a 40-item index of raw states (slow).

The shipped item table is not filled in (`default_artifacts=False`): this index holds the model's raw item states,
so the language-model rankers rank by their cosine, the path where the engine's vectors decide. `make serve`'s own
defaults, with the table and the full ML-100k index, are run by test_image_command.py."""

from __future__ import annotations

import re
import time

import pytest
from service_helpers import ADMIN_TOKEN, admin_headers, build_index

from indexer.core.catalog import Catalog, Item
from service.settings import Settings

pytestmark = pytest.mark.slow

# The first 40 MovieLens-100k movies; rating counts and averages are approximate.
MOVIES = [
    ("Toy Story", 1995, "Animation|Children's|Comedy", 452, 3.9),
    ("GoldenEye", 1995, "Action|Adventure|Thriller", 131, 3.2),
    ("Four Rooms", 1995, "Thriller", 90, 3.0),
    ("Get Shorty", 1995, "Action|Comedy|Drama", 209, 3.6),
    ("Copycat", 1995, "Crime|Drama|Thriller", 86, 3.3),
    ("Shanghai Triad", 1995, "Drama", 26, 3.6),
    ("Twelve Monkeys", 1995, "Drama|Sci-Fi", 392, 3.8),
    ("Babe", 1995, "Children's|Comedy|Drama", 219, 4.0),
    ("Dead Man Walking", 1995, "Drama", 299, 3.9),
    ("Richard III", 1995, "Drama|War", 89, 3.8),
    ("Seven (Se7en)", 1995, "Crime|Thriller", 236, 3.8),
    ("Usual Suspects, The", 1995, "Crime|Thriller", 267, 4.4),
    ("Mighty Aphrodite", 1995, "Comedy", 184, 3.4),
    ("Postino, Il", 1994, "Drama|Romance", 183, 4.0),
    ("Mr. Holland's Opus", 1995, "Drama", 293, 3.9),
    ("French Twist", 1995, "Comedy|Romance", 39, 3.2),
    ("From Dusk Till Dawn", 1996, "Action|Comedy|Crime|Horror|Thriller", 92, 3.1),
    ("White Balloon, The", 1995, "Drama", 10, 3.6),
    ("Antonia's Line", 1995, "Drama", 69, 3.8),
    ("Angels and Insects", 1995, "Drama|Romance", 72, 3.2),
    ("Muppet Treasure Island", 1996, "Action|Adventure|Comedy", 84, 3.0),
    ("Braveheart", 1995, "Action|Drama|War", 297, 4.2),
    ("Taxi Driver", 1976, "Drama|Thriller", 182, 4.1),
    ("Rumble in the Bronx", 1995, "Action|Adventure|Crime", 174, 3.5),
    ("Birdcage, The", 1996, "Comedy", 293, 3.4),
    ("Brothers McMullen, The", 1995, "Comedy", 73, 3.1),
    ("Bad Boys", 1995, "Action", 57, 3.0),
    ("Apollo 13", 1995, "Action|Drama|Thriller", 276, 3.9),
    ("Batman Forever", 1995, "Action|Adventure|Comedy|Crime", 114, 2.7),
    ("Belle de jour", 1967, "Drama", 37, 3.9),
    ("Crimson Tide", 1995, "Drama|Thriller|War", 154, 3.7),
    ("Crumb", 1994, "Documentary", 81, 3.8),
    ("Desperado", 1995, "Action|Romance|Thriller", 97, 3.5),
    ("Doom Generation, The", 1995, "Comedy|Drama", 7, 2.1),
    ("Free Willy 2: The Adventure Home", 1995, "Adventure|Children's|Drama", 11, 2.2),
    ("Mad Love", 1995, "Drama|Romance", 13, 2.2),
    ("Nadja", 1994, "Drama", 8, 2.9),
    ("Net, The", 1995, "Sci-Fi|Thriller", 120, 3.1),
    ("Strange Days", 1995, "Action|Crime|Sci-Fi", 66, 3.3),
    ("To Wong Foo, Thanks for Everything! Julie Newmar", 1995, "Comedy", 45, 3.0),
]
HISTORY = [{"item_id": "1", "rating": 5}, {"item_id": "8", "rating": 4}, {"item_id": "21", "rating": 4},
           {"item_id": "28", "rating": 5}]
TAGS = re.compile(r"<analyze user>.+</analyze user>\s*<analyze item>.+</analyze item>\s*<match>.+</match>\s*"
                  r"<rate>[1-5]</rate>", re.DOTALL)


@pytest.fixture(scope="module")
def ml_catalog() -> Catalog:
    return Catalog.of(
        Item(str(n), title, tuple(genres.split("|")), year, avg, count)
        for n, (title, year, genres, count, avg) in enumerate(MOVIES, start=1)
    )


def test_main_flow_on_smollm2(serve, real_engine, ml_catalog, tmp_path):
    index_dir = build_index(real_engine, ml_catalog, tmp_path / "index")
    # `make serve` settings (the app loads "smollm2" itself), but a deadline that a busy CI machine cannot miss
    server = serve(Settings(index_dir=index_dir, admin_token=ADMIN_TOKEN, request_timeout_s=600,
                            default_artifacts=False))
    body = {"history": HISTORY, "k": 5}

    start = time.perf_counter()
    first = server.client.post("/recommend", json=body).json()
    uncached_s = time.perf_counter() - start
    assert first["ranker"] == "reasoning" and first["fallback"] is None and first["cached"] is False
    assert first["model"]["id"] == "SmolLM2-135M-Instruct" and len(first["reasoning"].split()) >= 5
    assert len(first["items"]) == 5 and not {"1", "8", "21", "28"} & {i["item_id"] for i in first["items"]}

    start = time.perf_counter()
    again = server.client.post("/recommend", json=body).json()
    cached_s = time.perf_counter() - start
    assert again["cached"] is True and again["items"] == first["items"] and again["reasoning"] == first["reasoning"]
    assert cached_s < uncached_s / 5, (cached_s, uncached_s)

    rated = server.client.post("/rate", json={"history": HISTORY, "item_id": "22"}).json()
    assert rated["parsed"] is True and 1.0 <= rated["rating"] <= 5.0 and TAGS.fullmatch(rated["reasoning"])

    new = {"item_id": "1682", "title": "Jurassic Park", "genres": ["Action", "Adventure", "Sci-Fi"], "year": 1993,
           "description": "Cloned dinosaurs escape in an island theme park."}
    added = server.client.post("/admin/items", json={"items": [new]}, headers=admin_headers()).json()
    assert added == {"added": 1, "index_version": 2}
    found = server.client.post("/recommend", json={**body, "k": len(ml_catalog) + 1}).json()
    assert found["cached"] is True and found["index_version"] == 2
    assert "1682" in {i["item_id"] for i in found["items"]}
