"""Load-test reports name paths relative to the checkout (`loadtests.run.without_checkout`)."""

from __future__ import annotations

from pathlib import Path

from loadtests.run import without_checkout


def test_the_checkouts_absolute_path_is_cut_from_every_string() -> None:
    here = Path.cwd().resolve()
    meta = {"readiness": {"index": f"ready: 3 items at {here}/artifacts/indexes/x", "index_version": 1},
            "requests_file": f"{here}/artifacts/loadtest/requests.json", "rates": [f"{here}/a", 2.0]}
    assert without_checkout(meta) == {"readiness": {"index": "ready: 3 items at artifacts/indexes/x",
                                                    "index_version": 1},
                                      "requests_file": "artifacts/loadtest/requests.json", "rates": ["a", 2.0]}
    assert without_checkout("/elsewhere/file") == "/elsewhere/file"
