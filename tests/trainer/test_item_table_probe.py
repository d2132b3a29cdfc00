"""`reasonrec probe-items`: a free user vector fitted over a fixed item table finds the held-out item when the
table puts it near the user's items (and popularity on the same users does not), and the report says what ran."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from indexer.store import ItemStore
from model.transformers_engine import TransformersEngine
from trainer.cli import main
from trainer.data import load_dataset
from trainer.item_table_probe import ProbeConfig, probe_item_table

from test_eval_job import N_MOVIES, write_cycle_ml1m


@pytest.fixture(scope="module")
def cycle_table(tmp_path_factory: pytest.TempPathFactory, tiny_engine: TransformersEngine) -> tuple[Path, Path]:
    """Cycle data (each user watches consecutive movies) and a table that puts movie i at angle 2 pi i / N on a
    circle (plus small noise): the next movie is the nearest one the user has not seen."""
    root = tmp_path_factory.mktemp("probe")
    data = write_cycle_ml1m(root / "data")
    catalog = load_dataset("ml-1m-zip", data).catalog
    rng = np.random.default_rng(0)
    vectors = 0.02 * rng.standard_normal((len(catalog.ids()), 8)).astype(np.float32)
    for row, item_id in enumerate(catalog.ids()):
        number = int(re.search(r"Film number (\d+)", catalog.get(item_id).title).group(1))
        vectors[row, :2] += [np.cos(2 * np.pi * number / N_MOVIES), np.sin(2 * np.pi * number / N_MOVIES)]
    ItemStore.create(catalog, vectors, tiny_engine.fingerprint).save(root / "index")
    return data, root / "index"


def test_the_fitted_vector_finds_the_item_next_to_the_users_items(cycle_table: tuple[Path, Path]) -> None:
    data, index = cycle_table
    report = probe_item_table(ProbeConfig(dataset="ml-1m-zip", data_path=data, index_dir=index, users=40,
                                          recent=3, steps=50, temperature=0.1, lr=0.1))
    metrics = report["metrics"]
    assert report["users"] == 40 and report["loss_last"] < report["loss_first"]
    popularity = metrics["popularity (a zero vector + the prior with weight 1)"]["NDCG@10"]
    assert metrics["fitted vector"]["NDCG@10"] > max(0.6, popularity + 0.2)
    assert metrics["mean of the recent items"]["NDCG@10"] > popularity + 0.2


def test_the_command_writes_the_report_with_its_provenance(cycle_table: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data, index = cycle_table
    out = tmp_path / "probe"
    argv = ["probe-items", "--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny",
            "--index-dir", str(index), "--users", "10", "--steps", "5", "--out", str(out)]
    monkeypatch.setattr("sys.argv", ["reasonrec", *argv])
    assert main(argv) == 0
    assert "fitted vector: HR@10" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["command"].startswith("reasonrec probe-items") and report["config"]["steps"] == 5
    markdown = out.with_suffix(".md").read_text()
    assert "| fitted vector + prior 0.2 |" in markdown and "10 seeded test users" in markdown


def test_bad_settings_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--users"):
        ProbeConfig(users=0)
    with pytest.raises(ValueError, match="--index-dir"):
        probe_item_table(ProbeConfig(dataset="ml-1m-zip"))
