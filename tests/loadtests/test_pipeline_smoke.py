"""`make loadtest`'s pipeline end to end on the tiny model: request file from real ML-100k histories, a gateway
through `reasonrec serve`, the real k6 binary on every scenario of the smoke profile, Prometheus scrapes, and the
report (markdown, JSON, PNG). Percentiles from so few requests mean nothing; the plumbing is what is tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from trainer.train.index import IndexJobConfig, build_index


def test_smoke_profile_writes_a_report_without_errors(tmp_path: Path, monkeypatch) -> None:
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(artifacts))
    build_index(IndexJobConfig(dataset="ml-100k"), TransformersEngine(load_model("tiny")))
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--profile", "smoke", "--model", "tiny", "--dataset", "ml-100k",
         "--out-dir", str(out)],
        env={**os.environ, "REASONREC_ARTIFACTS": str(artifacts)}, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "latency.json").read_text())
    runs = {r["scenario"]: r for r in report["runs"]}
    assert set(runs) == {"production", "reasoning-warm", "direct", "reasoning-uncached"}
    assert report["meta"]["production_ranker"] == "sasrec"  # the ML-100k checkpoint shipped in deploy/artifacts
    for run in runs.values():
        assert run["k6"]["ok"] > 0 and run["k6"]["error_rate"] == 0.0, run
    assert runs["reasoning-warm"]["k6"]["cached_rate"] == 1.0
    assert runs["reasoning-uncached"]["k6"]["cached_rate"] == 0.0 and runs["reasoning-uncached"]["users"] == 2
    assert runs["reasoning-uncached"]["k6"]["requests"] == 4  # a closed model: 2 users, 4 requests in all
    assert "| production | sasrec |" in (out / "latency.md").read_text()
    assert "| reasoning-uncached | reasoning | 2 users | 4 |" in (out / "latency.md").read_text()
    assert (out / "latency.png").stat().st_size > 1000
