"""The evaluation job end to end on a tiny synthetic dataset (official ml-1m.zip layout) with the tiny LLM: every
ranker through one harness, both protocols, reports (JSON, markdown, PNG), TREC files, the item re-encoding
that keeps held-out ratings out of item prompts, and resuming from the LLM cache."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from trainer_helpers import write_cycle_ml1m

from indexer.prior import PRIOR_WEIGHTS
from model.engines.transformers_engine import TransformersEngine
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.evaluation.config import EvalConfig
from trainer.evaluation.job import run_eval
from trainer.experiments.tune_prior import tune_prior
from trainer.train.index import IndexJobConfig, build_index
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec
from trainer.train.table.config import TableTrainConfig
from trainer.train.table.job import train_table


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_engine: TransformersEngine) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("eval")
    data = write_cycle_ml1m(tmp / "data")
    build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data, out_dir=tmp / "index"), tiny_engine)
    paths = {"root": tmp, "data": data, "index": tmp / "index"}
    for protocol in ("leave-one-out", "cold-items"):
        paths[protocol] = tmp / f"sasrec-{protocol}"
        train_sasrec(SasrecTrainConfig(dataset="ml-1m-zip", data_path=data, protocol=protocol, max_len=12, hidden=16,
                                       blocks=1, dropout=0.0, lr=5e-3, batch_size=16, max_epochs=3,
                                       out_dir=paths[protocol]))
    paths["table"] = tmp / "table"
    with pytest.MonkeyPatch.context() as patch:  # the table job's caches go to the test's folder too
        patch.setenv("REASONREC_ARTIFACTS", str(tmp / "artifacts"))
        train_table(TableTrainConfig(dataset="ml-1m-zip", data_path=data, model="tiny", minilm_features=False,
                                     content_hidden=32, dropout=0.0, lr=5e-3, batch_size=16,
                                     max_epochs=4, valid_users=0, head_users=10, head_epochs=2,
                                     sasrec_checkpoint=paths["leave-one-out"], out_dir=paths["table"]), tiny_engine)
    return paths


def config_for(world: dict[str, Path], protocol: str, **overrides: object) -> EvalConfig:
    root = world["root"]
    settings = dict(dataset="ml-1m-zip", data_path=world["data"], protocol=protocol,
                    rankers=("sasrec", "popular", "direct", "reasoning"), sasrec_checkpoint=world[protocol],
                    model="tiny", index_dir=world["index"], llm_users=8, reasoning_users=4, reasoning_tokens=3,
                    llm_batch_size=4, bootstrap=50, out_dir=root / "results", trec_dir=root / "trec",
                    cache_dir=root / "cache")
    return EvalConfig(**{**settings, **overrides})


def test_leave_one_out_report_has_every_ranker_ratings_and_trec_files(world: dict[str, Path]) -> None:
    config = config_for(world, "leave-one-out", rankers=("sasrec", "popular", "content", "direct", "reasoning"))
    paths = run_eval(config, "reasonrec eval (test)")
    report = json.loads(paths[0].read_text())
    own = {r["ranker"]: r for r in report["rows"] if r["own"]}
    assert set(own) == {"sasrec", "popular", "content", "direct", "reasoning"}
    assert own["popular"]["users"] == 40 and own["direct"]["users"] == 8 and own["reasoning"]["users"] == 4
    assert own["sasrec"]["sample"] == "all" and own["reasoning"]["sample"] == "reasoning-sample"
    for row in report["rows"]:
        for metric in ("HR@5", "HR@10", "HR@20", "NDCG@10", "Recall@20", "MRR"):
            low, high = row["metrics"][metric]["ci95"]
            assert low <= row["metrics"][metric]["mean"] <= high
    paired = {(r["ranker"], r["sample"]) for r in report["rows"]}
    assert ("sasrec", "reasoning-sample") in paired and ("direct", "reasoning-sample") in paired
    predictors = {(r["predictor"], r["sample"]) for r in report["ratings"]["rows"]}
    assert {("global-mean", "all"), ("user-mean", "all"), ("item-mean", "all"), ("LLM direct", "direct-sample"),
            ("LLM reasoning", "reasoning-sample")} <= predictors
    assert report["rankers"]["reasoning"]["token_budget"] == 3
    markdown = paths[1].read_text()
    for needle in ("**command**", "**data**", "**split**", "**user samples**", "**models**", "**seeds**",
                   "**machine**", "**date**", "| sasrec | all | all | 40 |", "## Ratings"):
        assert needle in markdown
    assert paths[2].stat().st_size > 1000
    assert paths[3].name.endswith("-training.png") and paths[3].stat().st_size > 1000
    assert "![training](" in markdown and report["rankers"]["sasrec"]["history"][0]["epoch"] == 1
    run = (world["root"] / "trec" / "ml-1m-zip-leave-one-out" / "direct-all.run").read_text().splitlines()
    assert len({line.split()[0] for line in run}) == 8 and all(len(line.split()) == 6 for line in run)


def test_cold_protocol_reports_cold_warm_and_all_parts(world: dict[str, Path]) -> None:
    report = json.loads(run_eval(config_for(world, "cold-items"), "test")[0].read_text())
    parts = {(r["ranker"], r["part"]) for r in report["rows"] if r["own"]}
    assert {("sasrec", p) for p in ("cold", "warm", "all")} <= parts
    sasrec_cold = next(r for r in report["rows"] if r["own"] and r["ranker"] == "sasrec" and r["part"] == "cold")
    assert sasrec_cold["metrics"]["HR@20"]["mean"] == 0.0  # SASRec cannot score cold items
    assert "ratings" not in report


def test_a_strong_popularity_prior_orders_the_llm_ranking_by_training_counts(world: dict[str, Path]) -> None:
    root = world["root"] / "prior"
    config = config_for(world, "leave-one-out", rankers=("popular", "direct"), popularity_prior=1e4, ratings=False,
                        out_dir=root / "results", trec_dir=root / "trec")
    report = json.loads(run_eval(config, "prior")[0].read_text())
    assert any("popularity prior" in note and "10000.0 x log(1 + " in note for note in report["notes"])
    ds = load_dataset("ml-1m-zip", world["data"])
    split = make_split(ds, "leave-one-out", config.cold_frac, config.split_seed)
    counts = Counter(x.item_id for history in split.train.values() for x in history)
    run = (root / "trec" / "ml-1m-zip-leave-one-out" / "direct-all.run").read_text().splitlines()
    by_user: dict[str, list[str]] = {}
    for line in run:
        by_user.setdefault(line.split()[0], []).append(line.split()[2])
    assert len(by_user) == 8
    for items in by_user.values():
        assert [counts[i] for i in items] == sorted((counts[i] for i in items), reverse=True)
    with pytest.raises(ValueError, match="--popularity-prior"):
        config_for(world, "leave-one-out", popularity_prior=-1.0)


def test_tune_prior_ranks_validation_users_at_every_weight_and_names_the_best(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(world, "leave-one-out", rankers=("direct",), ratings=False, out_dir=world["root"] / "tune")
    calls = []
    real_embed = TransformersEngine.embed_direct
    monkeypatch.setattr(TransformersEngine, "embed_direct", lambda self, texts: calls.append(len(texts))
                        or real_embed(self, texts))
    json_path, md_path = tune_prior(config, 8, "reasonrec tune-prior (test)")
    report = json.loads(json_path.read_text())
    assert [row["weight"] for row in report["rows"]] == list(PRIOR_WEIGHTS) and report["valid_users"] == 8
    assert report["best_weight"] == max(report["rows"], key=lambda row: row["NDCG@10"])["weight"]
    assert sum(calls) == 8  # user vectors computed once, then taken from the disk cache for every other weight
    assert all(0 <= row["HR@10"] <= 1 and 0 <= row["NDCG@10"] <= row["HR@10"] + 1e-12 for row in report["rows"])
    assert "| w | HR@10 |" in md_path.read_text() and f"**best weight** (by NDCG@10): {report['best_weight']}" in \
        md_path.read_text()
    with pytest.raises(ValueError, match="--valid-users"):
        tune_prior(config, 0, "bad")


def test_tune_prior_names_a_cold_item_report_by_the_protocol(world: dict[str, Path]) -> None:
    # not by the split's description, "cold-items(cold_frac=0.2, seed=0)", which holds spaces and parentheses
    config = config_for(world, "cold-items", rankers=("direct",), ratings=False, out_dir=world["root"] / "tune-cold")
    json_path, md_path = tune_prior(config, 4, "reasonrec tune-prior --protocol cold-items (test)")
    dataset = json.loads(json_path.read_text())["dataset"]
    assert (json_path.name, md_path.name) == (f"{dataset}-cold-items-prior.json", f"{dataset}-cold-items-prior.md")


def test_rerun_takes_llm_vectors_from_the_cache(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(world, "leave-one-out", rankers=("direct", "reasoning"))
    first = json.loads(run_eval(config, "first")[0].read_text())
    for name in ("reason", "embed_direct", "generate", "choice_probs"):
        monkeypatch.setattr(TransformersEngine, name, lambda *a, **k: pytest.fail("engine called on a rerun"))
    second = json.loads(run_eval(config, "second")[0].read_text())
    assert [r["metrics"] for r in first["rows"]] == [r["metrics"] for r in second["rows"]]


def test_cli_train_and_eval_commands(world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from trainer.cli import main

    data = ["--dataset", "ml-1m-zip", "--data-path", str(world["data"])]
    assert main(["train-sasrec", *data, "--max-len", "8", "--hidden", "8", "--max-epochs", "1",
                 "--out-dir", str(tmp_path / "ck")]) == 0
    assert "SASRec+ checkpoint" in capsys.readouterr().out
    assert main(["eval", *data, "--rankers", "sasrec,popular", "--sasrec-checkpoint", str(tmp_path / "ck"),
                 "--no-ratings", "--bootstrap", "20", "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ml-1m-zip-leave-one-out.md").is_file()
    assert main(["eval", *data, "--rankers", "sasrec,bogus"]) == 2
    assert "--rankers" in capsys.readouterr().err


def test_the_table_rankers_report_s_alone_content_only_the_served_sum_and_the_head_alone(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(world["root"] / "artifacts"))
    config = config_for(world, "leave-one-out", rankers=("popular", "table", "table-content", "direct", "head"),
                        table=world["table"], ratings=False, out_dir=world["root"] / "table-results", trec_dir=None,
                        twins=5)
    paths = run_eval(config, "table")
    report = json.loads(paths[0].read_text())
    own = {r["ranker"]: r for r in report["rows"] if r["own"]}
    assert [p.name for p in paths][-1].endswith("-training.png") and report["rankers"]["table"]["history"]
    assert {"table", "table-content", "direct", "head"} <= set(own)
    assert own["table"]["users"] == 40 and own["direct"]["users"] == 8  # cheap rankers on everyone
    assert own["table"]["metrics"]["HR@10"]["mean"] > own["popular"]["metrics"]["HR@10"]["mean"]
    assert any("u = s(history) + f(h)" in note for note in report["notes"])
    twins = report["twins"]
    assert twins["items"] == 5 and 5 * 5 <= twins["pairs"] <= 5 * twins["users_per_item"]
    assert 0 <= twins["twin_in_top_k"] <= 1 and 0 <= twins["original_in_top_k"] <= 1
    # the gate can only add twins (content-served) to a list and push warm originals out of it
    assert twins["twin_gated_in_top_k"] >= twins["twin_in_top_k"]
    assert twins["original_gated_in_top_k"] <= twins["original_in_top_k"] and "gate" in twins
    with pytest.raises(FileNotFoundError, match="--table"):
        run_eval(config_for(world, "leave-one-out", rankers=("head",), table=world["root"] / "none", ratings=False),
                 "no table")
