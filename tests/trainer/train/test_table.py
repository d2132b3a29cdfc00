"""The item-table job on the tiny model (`trainer.train.table.job`): it learns a sequential pattern, keeps its heads and
metadata, resumes and refuses other settings, places cold items by g(c) alone, and the index job serves its rows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import write_cycle_ml1m

from indexer.core.paths import sasrec_dir
from indexer.store import ItemStore
from model.engines.transformers_engine import TransformersEngine
from model.networks.item_table import TableConfig, TableModel
from model.networks.sasrec import SasrecScorer, last_logits, right_padded
from model.networks.table_artifact import META_FILE, WEIGHTS_FILE, TableArtifact
from model.rankers.cold_slots import ColdSlots
from model.rankers.popular import PopularRanker
from model.rankers.table import TableRanker
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.data.splits import training_counts
from trainer.experiments.reasoning_head import ReasoningHeadConfig, train_reasoning_head
from trainer.protocol.harness import CoreRanker, rank_examples
from trainer.protocol.metrics import mean_metrics, ranking_metrics
from trainer.train.index import IndexJobConfig, build_index
from trainer.train.reasoning_sft import ReasoningSftConfig, train_reasoning
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec
from trainer.train.table.cold_slots import FitColdSlotsConfig, TopLists, fit_cold_slots, refit_cold_slots
from trainer.train.table.config import TableTrainConfig
from trainer.train.table.content import Ranking, content_shown, validate_with_content_shown
from trainer.train.table.features import item_features, table_store
from trainer.train.table.job import train_table


def tiny_table_config(data: Path, out: Path, **overrides: object) -> TableTrainConfig:
    settings: dict = dict(dataset="ml-1m-zip", data_path=data, model="tiny", minilm_features=False, content_hidden=32,
                          dropout=0.0, lr=1e-2, batch_size=16, max_epochs=10, patience=8, valid_users=0, head_users=12,
                          head_epochs=3, out_dir=out)
    return TableTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("table") / "data")


@pytest.fixture(scope="module", autouse=True)
def sasrec_runs(module_artifacts: Path, data: Path) -> None:
    """The SASRec+ checkpoints the tables are built on, where train-table looks for them (both protocols)."""
    for protocol in ("leave-one-out", "cold-items"):
        train_sasrec(SasrecTrainConfig(dataset="ml-1m-zip", data_path=data, protocol=protocol, max_len=12, hidden=16,
                                       blocks=1, dropout=0.0, lr=5e-3, batch_size=16, max_epochs=20, patience=4))


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
    monkeypatch.setattr("trainer.train.table.job._train_on_sasrec", lambda *a: pytest.fail("trained again"))
    assert train_table(tiny_table_config(data, folder)).table_hash == trained.table_hash
    with pytest.raises(ValueError, match="other settings"):
        train_table(tiny_table_config(data, folder, content_hidden=8))


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


def test_the_table_serves_sasrecs_rows_for_warm_items_and_g_for_the_others(trained: TableArtifact, folder: Path,
                                                                             data: Path,
                                                                             tiny_engine: TransformersEngine) -> None:
    sasrec = SasrecScorer.load(sasrec_dir("ml-1m-zip"))
    ds = load_dataset("ml-1m-zip", data)
    _, content = item_features(list(ds.catalog), trained.spec, tiny_engine, data.parent / "cache")
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    histories = [[x.item_id for x in h][-12:] for h in list(make_split(ds, "leave-one-out").train.values())[:8]]
    code, model = trained.code_of, trained.model.eval()
    with torch.no_grad():
        table = model.table(features)
        inputs = right_padded([[code[i] for i in h] for h in histories])
        users = model.user_vectors(table[inputs, :-1], torch.tensor([len(h) for h in histories]))
        warm = torch.tensor([code[i] for i in sasrec.item_ids])
        expected = last_logits(sasrec.net, [sasrec.codes(h) for h in histories])
        g_rows = model.content_rows(features[1:])
    # warm items: SASRec+'s ranking exactly; every row is g(c) + e, so a cold or hot-added item is g(c) alone
    torch.testing.assert_close(users @ table[warm, :-1].T + table[warm, -1], expected, atol=1e-4, rtol=1e-4)
    assert g_rows.abs().sum() > 0 and not torch.allclose(table[1:], g_rows)
    meta = json.loads((folder / META_FILE).read_text())
    assert "served by g(c) alone" in meta["model"] and meta["metrics"]["valid"]["epoch"] == meta["best_epoch"] >= 1
    calibration = meta["calibration"]
    assert calibration["valid_ndcg10_after"] >= calibration["valid_ndcg10_before"]
    assert {"max_slots", "margin", "valid"} <= meta["cold_slots"].keys()  # the gate fitted on the same validation
    split = make_split(ds, "leave-one-out")
    fixed = torch.zeros_like(table)
    fixed[warm] = table[warm]
    shown = content_shown(model, 0.2, 0)
    assert 0 < int(shown.sum()) == calibration["content_shown_items"] < len(code)
    folded = Ranking(model, fixed, features, split.valid, code, shown).ranks(1.0, 0.0)  # the calibration is in g
    assert ranking_metrics(folded)["NDCG@10"].mean() == pytest.approx(calibration["valid_ndcg10_after"], abs=1e-9)
    validated = validate_with_content_shown(model, fixed, features, split.valid, code, shown, 0.05)
    assert validated["NDCG@10"] >= calibration["valid_ndcg10_after"] - 1e-9 and "HR@10 cold" in validated


def random_table(data: Path, seed: int, cold_every: int) -> tuple[list, dict[str, int], TableModel, torch.Tensor,
                                                                  torch.Tensor, torch.Tensor]:
    """20 validation examples and a random table over the catalog whose every `cold_every`-th item has no residual:
    (examples, codes, model, content features, fixed rows, the items shown by g(c) alone)."""
    torch.manual_seed(seed)
    ds = load_dataset("ml-1m-zip", data)
    code = {item_id: c for c, item_id in enumerate(ds.catalog.ids(), start=1)}
    warm = torch.tensor([i % cold_every != 0 for i in range(len(code))])
    model = TableModel(TableConfig(n_items=len(code), content_dim=5, dim=8, content_hidden=8, max_len=12, blocks=1,
                                   dropout=0.0), warm).eval()
    with torch.no_grad():
        model.content_map.net[-1].weight.normal_()
        model.content_map.net[-1].bias.normal_()
    features = torch.cat([torch.zeros(1, 5), torch.randn(len(code), 5)])
    fixed = torch.randn(len(code) + 1, 9) * model.warm[:, None]
    shown = ~model.warm
    shown[0] = False
    return make_split(ds, "leave-one-out").valid[:20], code, model, features, fixed, shown


def test_the_validation_ranks_are_those_of_the_items_served_by_their_content(data: Path,
                                                                        tiny_engine: TransformersEngine) -> None:
    examples, code, model, features, fixed, shown = random_table(data, seed=0, cold_every=7)
    ranked = Ranking(model, fixed, features, examples, code, shown)
    with torch.no_grad():
        content = model.content_rows(features)
    for scale, offset in ((1.0, 0.0), (2.0, 0.7)):
        by_content = content.clone()
        by_content[:, :-1] *= scale
        by_content[:, -1] += offset
        rows = torch.where(model.warm[:, None], fixed, by_content)
        expected = []
        for e in examples:
            history = [code[x.item_id] for x in e.history][-12:]
            with torch.no_grad():
                user = model.user_vectors(rows[torch.tensor([history]), :-1], torch.tensor([len(history)]))[0]
            target = code[e.target.item_id]
            all_scores = rows @ torch.cat([user, torch.ones(1)])
            others = [c for c in range(1, len(code) + 1) if c != target and c not in history]
            expected.append(1 + int((all_scores[others] > all_scores[target]).sum()))
        if scale == 1.0:
            np.testing.assert_array_equal(ranked.ranks(scale, offset), expected)
        else:  # the history's own rows move with g too when it holds items without a residual
            assert all(h == e for h, e, ex in zip(ranked.ranks(scale, offset), expected, examples, strict=True)
                       if all(bool(model.warm[code[x.item_id]]) for x in ex.history))


def test_the_gated_validation_ranks_are_those_of_the_served_gate(data: Path) -> None:
    examples, code, model, features, fixed, shown = random_table(data, seed=1, cold_every=5)
    ranked = Ranking(model, fixed, features, examples, code, shown)
    lists = TopLists.of(ranked)
    with torch.no_grad():
        rows = torch.where(model.warm[:, None], fixed, model.content_rows(features))
    ids = [str(c) for c in range(1, len(code) + 1)]
    cold_mask = shown[1:].numpy()
    spread = ranked.score_sd()
    for slots in (ColdSlots(), ColdSlots(1, math.inf), ColdSlots(2, 0.5 * spread), ColdSlots(3, math.inf),
                  ColdSlots(1, math.inf, exclusive=True), ColdSlots(2, 0.5 * spread, exclusive=True)):
        expected = []
        for e in examples:
            history = [code[x.item_id] for x in e.history][-12:]
            with torch.no_grad():
                user = model.user_vectors(rows[torch.tensor([history]), :-1], torch.tensor([len(history)]))[0]
            all_scores = (rows[1:] @ torch.cat([user, torch.ones(1)])).double().numpy()
            gated = [int(i) for i, _ in slots.top_k(all_scores, ids, cold_mask, 10, {str(c) for c in history})]
            target = code[e.target.item_id]
            expected.append(gated.index(target) + 1 if target in gated else np.inf)
        np.testing.assert_array_equal(lists.ranks(slots), expected)
    chosen, fit = fit_cold_slots(ranked, 1.0, 0.0, 0.05)
    assert fit["grid"][0]["max_slots"] == 0 and len(fit["grid"]) > 1  # no gate is always a candidate
    floor = fit["warm_ndcg10_floor"]
    best = max(fit["grid"], key=lambda r: (r["warm_ndcg10"] >= floor, r["cold_hr10"] if r["warm_ndcg10"] >= floor
                                           else r["warm_ndcg10"], r["ndcg10"]))
    assert chosen.to_meta() == {k: best[k] for k in ("max_slots", "margin", "exclusive")}


def test_fit_cold_slots_refits_what_train_table_chose(folder: Path, data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "table"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / META_FILE).read_text())
    chosen = meta.pop("cold_slots")
    (copy / META_FILE).write_text(json.dumps(meta))
    slots, manifest = refit_cold_slots(FitColdSlotsConfig(dataset="ml-1m-zip", data_path=data, model="tiny",
                                                          table=copy), "reasonrec fit-cold-slots")
    refit = json.loads(manifest.read_text())
    assert slots.to_meta() == {k: chosen[k] for k in ("max_slots", "margin", "exclusive")}
    assert refit["weights_sha256"] == meta["weights_sha256"] and refit["cold_slots"]["command"]
    np.testing.assert_allclose([r["ndcg10"] for r in refit["cold_slots"]["valid"]["grid"]],
                               [r["ndcg10"] for r in chosen["valid"]["grid"]], atol=1e-6)


def test_a_table_cannot_start_from_a_missing_sasrec(data: Path, tiny_engine: TransformersEngine,
                                                     tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-sasrec"):
        train_table(tiny_table_config(data, tmp_path / "t", sasrec_checkpoint=tmp_path / "no",
                                      head=False), tiny_engine)


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


def test_the_reasoning_head_job_trains_and_tests_heads_on_every_state(folder: Path, data: Path,
                                                                       tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    train_reasoning(ReasoningSftConfig(dataset="ml-1m-zip", data_path=data, model="tiny", windows=2, cuts=2,
                                       min_lines=3, epochs=1, check_users=0, out_dir=adapter))
    config = ReasoningHeadConfig(dataset="ml-1m-zip", data_path=data, model="tiny", adapter=adapter, table=folder,
                                 head_users=6, valid_users=4, test_users=5, reasoning_tokens=4, head_epochs=2,
                                 out_dir=tmp_path / "reports")
    md, js = train_reasoning_head(config, "reasonrec train-reasoning-head (test)")
    report = json.loads(js.read_text())
    assert report["samples"]["training"] > 6 and report["samples"]["test"] == 5
    heads = {"s alone"} | {f"{kind} {use}" for kind in ("direct", "hindsight", "forecast")
                           for use in ("alone", "residual")}
    differences = {f"{kind} - direct ({use})" for kind in ("hindsight", "forecast") for use in ("alone", "residual")}
    assert heads | differences == set(report["test"])
    for name in heads:
        low, high = report["test"][name]["NDCG@10"]["ci95"]
        assert 0 <= low <= report["test"][name]["NDCG@10"]["mean"] <= high <= 1
    diff = report["test"]["forecast - direct (alone)"]["HR@10"]["mean"]
    assert diff == pytest.approx(report["test"]["forecast alone"]["HR@10"]["mean"]
                                 - report["test"]["direct alone"]["HR@10"]["mean"])
    assert "trained after forecast conclusions" in md.read_text()
    # a rerun reads the cached states and gives the same figures
    again = json.loads(train_reasoning_head(config, "rerun")[1].read_text())
    assert again["test"] == report["test"]


def test_the_reasoning_head_job_needs_an_adapter(data: Path) -> None:
    with pytest.raises(ValueError, match="--adapter"):
        ReasoningHeadConfig(dataset="ml-1m-zip", data_path=data, model="tiny")
    with pytest.raises(ValueError, match="--conclusions must name some of hindsight, forecast, not oracle"):
        ReasoningHeadConfig(dataset="ml-1m-zip", data_path=data, model="tiny", adapter=data, conclusions=("oracle",))
