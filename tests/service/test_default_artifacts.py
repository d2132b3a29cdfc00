"""What `reasonrec serve` fills in when nothing is configured (`service.startup.default_artifacts`): the dataset's
SASRec+ checkpoint and item table trained here when finished, else the ones shipped with the repository, and a
table only when it was trained on the served model's states."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from service_helpers import write_sasrec_checkpoint
from test_table_serving import make_table

from model.engines.transformers_engine import TransformersEngine
from model.networks.sasrec import META_FILE
from service.settings import Settings
from service.startup import default_artifacts


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr("service.startup.SHIPPED", tmp_path / "shipped")
    return {"trained_sasrec": tmp_path / "artifacts" / "sasrec" / "ml-test-leave-one-out-seed0",
            "trained_table": tmp_path / "artifacts" / "tables" / "ml-test-leave-one-out-seed0",
            "shipped_sasrec": tmp_path / "shipped" / "ml-test" / "sasrec",
            "shipped_table": tmp_path / "shipped" / "ml-test" / "table"}


def test_nothing_found_leaves_both_unset(places, tiny_engine: TransformersEngine) -> None:
    settings = default_artifacts(Settings(model="tiny", dataset="ml-test"), tiny_engine)
    assert settings.sasrec_checkpoint is None and settings.table is None


def test_shipped_artifacts_serve_a_fresh_machine_and_trained_ones_win(places, tiny_engine, catalog) -> None:
    write_sasrec_checkpoint(places["shipped_sasrec"], catalog.ids(), status="done")
    make_table(tiny_engine, catalog, places["shipped_table"])
    settings = default_artifacts(Settings(model="tiny", dataset="ml-test"), tiny_engine)
    assert (settings.sasrec_checkpoint, settings.table) == (places["shipped_sasrec"], places["shipped_table"])
    write_sasrec_checkpoint(places["trained_sasrec"], catalog.ids(), status="done")
    make_table(tiny_engine, catalog, places["trained_table"])
    settings = default_artifacts(Settings(model="tiny", dataset="ml-test"), tiny_engine)
    assert (settings.sasrec_checkpoint, settings.table) == (places["trained_sasrec"], places["trained_table"])


def test_unfinished_runs_and_other_models_tables_are_not_used(places, tiny_engine, catalog) -> None:
    write_sasrec_checkpoint(places["trained_sasrec"], catalog.ids(), status="training")
    make_table(tiny_engine, catalog, places["trained_table"])
    another_model = SimpleNamespace(fingerprint=replace(tiny_engine.fingerprint, model_id="another-model"))
    settings = default_artifacts(Settings(model="tiny", dataset="ml-test"), another_model)
    assert settings.sasrec_checkpoint is None and settings.table is None  # unfinished; another model's states
    assert (places["trained_sasrec"] / META_FILE).is_file()


def _adapter(folder: Path, base: dict, status: str = "done") -> Path:
    """An adapter folder as `reasonrec train-reasoning` leaves it (only what the resolution reads)."""
    import json

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "reasonrec-adapter.json").write_text(json.dumps({"status": status, "base_model": base}))
    return folder


def test_the_reasoning_adapter_defaults_to_the_trained_then_the_shipped_one(places, tiny_engine, tmp_path) -> None:
    from service.startup import default_adapter

    base = tiny_engine.fingerprint.to_json()
    settings = Settings(model="tiny", dataset="ml-test")
    assert default_adapter(settings) is None
    shipped = _adapter(tmp_path / "shipped" / "ml-test" / "reasoning", base)
    assert default_adapter(settings) == shipped
    trained = _adapter(tmp_path / "artifacts" / "adapters" / "ml-test-leave-one-out-reasoning-seed0", base)
    assert default_adapter(settings) == trained
    assert default_adapter(Settings(model="tiny", dataset="ml-test", adapter="none")) == "none"
    assert Settings(model="tiny", adapter="off").reasoning_adapter() is None
    assert default_adapter(Settings(model="tiny", dataset="ml-test", adapter=shipped)) == shipped


def test_an_adapter_of_another_model_or_an_unfinished_run_is_not_served(places, tiny_engine, tmp_path) -> None:
    from service.startup import default_adapter

    other = {**tiny_engine.fingerprint.to_json(), "weights_hash": "another-one"}
    _adapter(tmp_path / "shipped" / "ml-test" / "reasoning", other)
    _adapter(tmp_path / "artifacts" / "adapters" / "ml-test-leave-one-out-reasoning-seed0",
             tiny_engine.fingerprint.to_json(), status="training")
    assert default_adapter(Settings(model="tiny", dataset="ml-test")) is None
