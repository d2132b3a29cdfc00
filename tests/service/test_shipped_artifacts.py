"""What `make serve` serves on a fresh machine: the ML-100k artifacts committed in deploy/artifacts, each with the
manifest of the command that made it, small, and made for one another (the reasoning adapter and the item table
on the same base model and template, so the adapter is served beside the table the base states built); and the
judge `make serve-judge` adds, whose pool of users is written on the machine, never committed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from indexer.core.paths import SHIPPED
from model.engines.loading import ADAPTER_META, adapter_base, finished_adapter
from model.judge_pool import POOL_FILE
from model.networks.table_artifact import stored_fingerprint
from model.rankers.conclusion import CONCLUSION_FILE, ConclusionTerm

ML100K = SHIPPED / "ml-100k"
MANIFESTS = {"sasrec": "meta.json", "table": "table.json", "rating": "rating.json", "reasoning": ADAPTER_META,
             "judge": ADAPTER_META}


def test_every_shipped_artifact_names_the_command_that_made_it() -> None:
    for folder, manifest in MANIFESTS.items():
        meta = json.loads((ML100K / folder / manifest).read_text())
        assert meta["status"] == "done", folder
        if folder != "sasrec":  # the SASRec+ manifest predates commands in manifests; its report names it
            assert meta["command"].startswith("reasonrec "), folder
    conclusion = json.loads((ML100K / "reasoning" / CONCLUSION_FILE).read_text())
    assert conclusion["meta"]["command"].startswith("reasonrec train-conclusion")
    assert "NDCG@10" in conclusion["meta"]["test"] and conclusion["meta"]["reasoning"]["claims"] > 0


def test_the_reasoning_adapter_fits_the_shipped_table_and_is_small() -> None:
    adapter = ML100K / "reasoning"
    assert finished_adapter(adapter)
    assert adapter_base(adapter) == stored_fingerprint(ML100K / "table")
    ConclusionTerm.load(adapter)  # non-negative weights, or it raises
    assert sum(f.stat().st_size for f in adapter.iterdir()) < 8 * 2**20
    assert "/" not in json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert sorted(f.name for f in Path(adapter).iterdir()) == sorted(
        ["adapter_config.json", "adapter_model.safetensors", ADAPTER_META, CONCLUSION_FILE])


def test_the_judge_is_a_small_adapter_of_the_served_model_without_its_pool() -> None:
    judge = ML100K / "judge"
    assert finished_adapter(judge) and adapter_base(judge) == stored_fingerprint(ML100K / "table")
    committed = sorted(f.name for f in judge.iterdir() if f.name != POOL_FILE)  # pool.json: MovieLens users' data
    assert committed == sorted(["adapter_config.json", "adapter_model.safetensors", ADAPTER_META])
    assert sum((judge / name).stat().st_size for name in committed) < 8 * 2**20
    assert "/" not in json.loads((judge / "adapter_config.json").read_text())["base_model_name_or_path"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(judge / POOL_FILE)], cwd=SHIPPED.parents[1])
    assert ignored.returncode == 0
