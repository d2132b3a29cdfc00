"""The page to try the recommender (GET /try) and the catalog search it uses (GET /items?q=): the search's matches,
limits and 422s in the error envelope; the page served as plain HTML over the public API; and, in the slow suite,
the page run in headless Chromium (Debian's `chromium`; skipped with the reason when it is not installed): every
ranker's list filled, and a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from service_helpers import assert_error, tiny_settings, write_sasrec_checkpoint

RANKERS = ("reasoning", "direct", "sasrec", "popular", "content")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")


def test_search_finds_titles_by_their_words_most_rated_first(gateway, catalog):
    first = next(iter(catalog))
    words = first.title.split()
    found = gateway.client.get("/items", params={"q": " ".join(w.upper() for w in words)}).json()
    assert first.item_id in [item["item_id"] for item in found["items"]] and found["total"] >= 1
    everything = gateway.client.get("/items", params={"q": "(", "limit": 5}).json()  # "(year)" is in every title
    counts = [item["rating_count"] for item in everything["items"]]
    assert len(counts) == 5 and counts == sorted(counts, reverse=True) and everything["total"] == len(catalog)
    assert gateway.client.get("/items", params={"q": "no such title anywhere"}).json() == {"items": [], "total": 0}


@pytest.mark.parametrize(("params", "param"), [({}, "q"), ({"q": ""}, "q"), ({"q": "  "}, "q"), ({"q": "x" * 301}, "q"),
                                               ({"q": "a", "limit": 0}, "limit"), ({"q": "a", "limit": 101}, "limit")])
def test_search_refuses_bad_queries_naming_the_parameter(gateway, params, param):
    assert_error(gateway.client.get("/items", params=params), 422, "invalid_request", param)


def test_the_page_is_served_and_uses_only_the_public_api(gateway):
    page = gateway.client.get("/try")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    calls = set(re.findall(r'api\("(GET|POST)", [`"](/[a-z]+)', page.text))
    assert calls == {("GET", "/items"), ("POST", "/recommend"), ("POST", "/rate")}
    assert all(f'"{ranker}"' in page.text for ranker in RANKERS)
    root = gateway.client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/try"
    assert "/try" not in gateway.client.get("/openapi.json").json()["paths"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_page_fills_every_rankers_list_in_headless_chromium(serve, index_dir, tiny_engine, catalog, tmp_path):
    checkpoint = write_sasrec_checkpoint(tmp_path / "sasrec", catalog.ids())
    server = serve(tiny_settings(index_dir, sasrec_checkpoint=checkpoint), tiny_engine)
    url = f"{server.url}/try?q=movie+number+1&history=1:5,2:4,3:5&rate=4"
    browser = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=60000"]
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    assert 'data-done="recommend"' in dom and 'data-searched="yes"' in dom and 'data-rated="yes"' in dom, dom[-2000:]
    found = re.search(r'<ul id="results">(.*?)</ul>', dom, re.S).group(1)
    matches = server.client.get("/items", params={"q": "movie number 1", "limit": 15}).json()["items"]
    assert found.count(">add</button>") == found.count("<li>") == len(matches) > 1
    assert all(f"<span>{item['title']} ({item['year']})</span>" in found for item in matches)
    rated = re.search(r'<div id="rated">(.*?)</div>', dom, re.S).group(1)
    assert rated.startswith("Movie Number 4") and "&lt;rate&gt;" in rated, rated
    columns = re.findall(r'<div class="panel ranker" data-ranker="(\w+)">(.*?)</ol>', dom, re.S)
    assert {ranker for ranker, _ in columns} == set(RANKERS), dom[-3000:]
    for ranker, column in columns:
        assert column.count("<li>") == 10 and 'class="score"' in column, (ranker, column[:500])
        assert "ms; cache" in column
    shot = tmp_path / "try.png"
    subprocess.run([*browser, "--window-size=1400,900", f"--screenshot={shot}", url], capture_output=True,
                   timeout=180, check=True)
    assert shot.stat().st_size > 10_000
