"""The item-table job on the tiny model (`trainer.train.table`): it learns a sequential pattern, keeps its heads and
metadata, resumes and refuses other settings, places cold items by g(c) alone, and the index job serves its rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import write_cycle_ml1m

from indexer.store import ItemStore
from model.item_table import TableConfig, TableModel
from model.rankers.popular import PopularRanker
from model.rankers.table import TableRanker
from model.table_artifact import META_FILE, WEIGHTS_FILE, TableArtifact
from model.transformers_engine import TransformersEngine
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.evaluation.harness import CoreRanker, rank_examples
from trainer.evaluation.llm import training_counts
from trainer.evaluation.metrics import mean_metrics
from trainer.train.index import IndexJobConfig, build_index
from trainer.train.table import TableTrainConfig, item_features, table_store, train_table


def tiny_table_config(data: Path, out: Path, **overrides: object) -> TableTrainConfig:
    settings: dict = dict(dataset="ml-1m-zip", data_path=data, model="tiny", minilm_features=False, dim=16,
                          content_hidden=32, max_len=12, blocks=1, dropout=0.0, lr=1e-2, batch_size=16, max_epochs=10,
                          patience=8, valid_users=0, head_users=12, head_epochs=3, out_dir=out)
    return TableTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module", autouse=True)
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caches, tables and indexes of these tests go to a temporary artifacts folder."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("artifacts")
        patch.setenv("REASONREC_ARTIFACTS", str(root))
        yield root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("table") / "data")


@pytest.fixture(scope="module")
def folder(data: Path, tiny_engine: TransformersEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("table") / "out"
    train_table(tiny_table_config(data, out), tiny_engine)
    return out


@pytest.fixture()
def trained(folder: Path) -> TableArtifact:
    return TableArtifact.load(folder)


def test_the_table_learns_the_pattern_and_beats_popularity(trained: TableArtifact, data: Path,
                                                           tiny_engine: TransformersEngine) -> None:
    ds = load_dataset("ml-1m-zip", data)
    split = make_split(ds, "leave-one-out")
    _, content = item_features(list(ds.catalog), trained.spec, tiny_engine, data.parent / "cache")
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    store = table_store(trained, features, ds.catalog)
    candidates = ds.catalog.ids()
    table = mean_metrics(rank_examples(CoreRanker(TableRanker(trained, store), ds.catalog, candidates), split.test,
                                       candidates).per_query())
    popular = mean_metrics(rank_examples(CoreRanker(PopularRanker(training_counts(candidates, split)), ds.catalog,
                                                    candidates), split.test, candidates).per_query())
    assert table["HR@10"] > popular["HR@10"] + 0.25 and table["NDCG@10"] > popular["NDCG@10"] + 0.2, (table, popular)


def test_the_artifact_holds_both_heads_metadata_and_no_content(trained: TableArtifact, folder: Path) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["status"] == "done" and meta["data"]["dataset"] == "ml-1m-zip" and meta["fingerprint"]
    heads = meta["heads"]
    assert heads["samples"] > 12 and {"s_alone", "served", "alone"} <= set(heads)
    assert heads["served"]["NDCG@10"] >= heads["s_alone"]["NDCG@10"]  # the served head starts as "no change"
    assert trained.has_head and trained.alone is not None and trained.table_hash
    assert (folder / WEIGHTS_FILE).stat().st_size < 200_000  # weights only: content features are recomputed


def test_a_rerun_is_a_no_op_and_other_settings_are_refused(trained: TableArtifact, folder: Path, data: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trainer.train.table._train_encoder", lambda *a: pytest.fail("trained again"))
    assert train_table(tiny_table_config(data, folder)).table_hash == trained.table_hash
    with pytest.raises(ValueError, match="other settings"):
        train_table(tiny_table_config(data, folder, dim=8))


def test_items_without_training_interactions_get_their_content_part_alone() -> None:
    torch.manual_seed(0)
    config = TableConfig(n_items=3, content_dim=4, dim=8, content_hidden=8)
    model = TableModel(config, torch.tensor([True, False, True])).eval()
    content = torch.randn(4, 4)
    with torch.no_grad():
        model.residual.weight.normal_()
        table = model.table(content)
        dropped = model.table(content, keep_residual=torch.tensor([True, False, False, True]))
        torch.testing.assert_close(table[2], model.content_rows(content[2:3])[0])  # item 2 is cold: no residual
        torch.testing.assert_close(dropped[2 - 0], table[2])
        torch.testing.assert_close(dropped[1], model.content_rows(content[1:2])[0])  # residual dropped
        assert not torch.allclose(table[1], dropped[1])
    assert torch.all(table[0] == 0)


def test_a_cold_item_run_ranks_cold_items_through_g(data: Path, tiny_engine: TransformersEngine,
                                                     tmp_path: Path) -> None:
    artifact = train_table(tiny_table_config(data, tmp_path / "cold", protocol="cold-items", max_epochs=2,
                                             head=False), tiny_engine)
    ds = load_dataset("ml-1m-zip", data)
    split = make_split(ds, "cold-items")
    code = artifact.code_of
    assert not any(bool(artifact.model.warm[code[i]]) for i in split.cold_items)
    assert all(bool(artifact.model.warm[code[i]]) for i in ds.catalog.ids() if i not in split.cold_items)
    _, content = item_features(list(ds.catalog), artifact.spec, tiny_engine, data.parent / "cache")
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    store = table_store(artifact, features, ds.catalog)
    cold = rank_examples(CoreRanker(TableRanker(artifact, store), ds.catalog, ds.catalog.ids()), split.test_cold,
                         ds.catalog.ids())
    assert len(cold.ranks) and np.isfinite(cold.ranks).all()  # scorable, unlike SASRec's -inf


def test_the_index_job_serves_the_tables_rows(trained: TableArtifact, folder: Path, data: Path,
                                              tiny_engine: TransformersEngine) -> None:
    result = build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data, table=folder), tiny_engine)
    assert result.out_dir.name.endswith(f"-table-{trained.table_hash}")
    store = ItemStore.load(result.out_dir, expect=tiny_engine.fingerprint)
    assert store.manifest.metric == "ip" and store.manifest.table == trained.table_hash
    ds = load_dataset("ml-1m-zip", data)
    _, content = item_features(list(ds.catalog), trained.spec, tiny_engine, data.parent / "cache")
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    with torch.no_grad():
        rows = trained.model.table(features)[1:].numpy()
    np.testing.assert_allclose(store.vectors_of(trained.item_ids), rows, atol=1e-4)
    assert build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data, table=folder), tiny_engine).skipped
