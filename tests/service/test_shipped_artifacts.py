"""What `make serve` serves on a fresh machine: the ML-100k artifacts committed in deploy/artifacts, each with the
manifest of the command that made it, small, and made for one another (the reasoning adapter and the item table
on the same base model and template, so the adapter is served beside the table the base states built)."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.core.paths import SHIPPED
from model.engines.loading import ADAPTER_META, adapter_base, finished_adapter
from model.networks.table_artifact import stored_fingerprint
from model.rankers.conclusion import CONCLUSION_FILE, ConclusionTerm

ML100K = SHIPPED / "ml-100k"
MANIFESTS = {"sasrec": "meta.json", "table": "table.json", "rating": "rating.json", "reasoning": ADAPTER_META}


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
