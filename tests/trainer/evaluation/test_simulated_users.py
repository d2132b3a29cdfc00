"""Simulated users for cold items (`reasonrec experiment simulated-users`) on a tiny cold-items table: the judge's
two orders, the rows' BPR refinement, the phases' candidates, the REINFORCE policy on a known reward, and the
experiment end to end with both judges (the pool's answers kept and reused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import HashEncoder

from model.engines.transformers_engine import TransformersEngine
from model.networks.preference_rows import Preferences, refine_rows
from model.networks.sasrec import right_padded
from model.preference import prefer_first
from model.prompts import HistoryLine
from trainer.cli import build_parser
from trainer.config_args import config_from_args
from trainer.data.splits import ColdSplit
from trainer.experiments.simulated_users import (
    FEATURES,
    SimulatedUsersConfig,
    make_phase,
    simulated_users,
    top_users,
    train_policy,
    user_features,
)
from trainer.train.judge import pool_users
from trainer.train.table.served import ServedTable


def test_the_judge_reads_both_orders(served: ServedTable, tiny_engine: TransformersEngine) -> None:
    catalog = served.dataset.catalog
    user, history = next(iter(served.split.train.items()))
    lines = [HistoryLine.of_item(catalog[x.item_id], x.rating, x.timestamp) for x in history]
    a, b, c = (catalog[i] for i in catalog.ids()[:3])
    forward = prefer_first(tiny_engine, lines, [(a, b), (a, c)])
    backward = prefer_first(tiny_engine, lines, [(b, a), (c, a)])
    assert forward.shape == (2,) and np.all((forward > 0) & (forward < 1))
    np.testing.assert_allclose(forward + backward, 1.0, atol=1e-5)
    assert prefer_first(tiny_engine, lines, []).shape == (0,)


def test_refinement_moves_only_the_named_rows_toward_the_winner() -> None:
    torch.manual_seed(0)
    rows, users = torch.randn(6, 5), torch.randn(2, 4)
    pairs = Preferences(torch.tensor([0, 1]), torch.tensor([2, 2]), torch.tensor([3, 4]), torch.tensor([1.0, 1.0]))

    def margin(table: torch.Tensor, user: int, w: int, lose: int) -> float:
        return float(users[user] @ (table[w, :-1] - table[lose, :-1]) + table[w, -1] - table[lose, -1])

    refined = refine_rows(rows, users, pairs, steps=200, lr=0.05, l2=0.0)
    assert torch.equal(refined[[0, 1, 5]], rows[[0, 1, 5]]) and not torch.equal(refined[2], rows[2])
    assert margin(refined, 0, 2, 3) > margin(rows, 0, 2, 3) and margin(refined, 1, 2, 4) > margin(rows, 1, 2, 4)
    assert margin(refined, 0, 2, 3) > 0 and margin(refined, 1, 2, 4) > 0
    held = refine_rows(rows, users, pairs, steps=200, lr=0.05, l2=100.0)
    assert (held - rows).abs().max() < (refined - rows).abs().max()
    no_weight = Preferences(pairs.users, pairs.winners, pairs.losers, torch.zeros(2))
    assert torch.equal(refine_rows(rows, users, no_weight), rows)


def test_a_phase_ranks_its_own_half_and_the_warm_items_only(served: ServedTable) -> None:
    split, model, code = served.split, served.artifact.model, served.artifact.code_of
    assert isinstance(split, ColdSplit)
    pool = set(pool_users(split, 5, 0))
    phase = make_phase(served, "test", pool)
    assert phase.cold and not {e.user_id for e in phase.cold + phase.warm} & pool
    with torch.no_grad():
        rows = model.table(served.features)
        ranks = phase.ranks(rows)
        other = {code[i] for i in split.valid_items}
        for k, e in enumerate(phase.cold + phase.warm):
            history = [code[x.item_id] for x in e.history][-model.config.max_len:]
            user = model.user_vectors(torch.where(model.warm[:, None], served.fixed, model.content_rows(
                served.features))[right_padded([history]), :-1], torch.tensor([len(history)]))[0]
            score = rows @ torch.cat([user, torch.ones(1)])
            target = code[e.target.item_id]
            rivals = [c for c in range(1, len(code) + 1) if c != target and c not in history and c not in other]
            assert ranks[k] == 1 + int((score[rivals] > score[target]).sum())


def test_the_policy_learns_to_pick_users_a_known_reward_favours() -> None:
    rng = np.random.default_rng(0)
    features = rng.random((30, len(FEATURES)))
    users = [f"u{i}" for i in range(30)]
    good = set(top_users(users, features[:, 2], 10))

    def reward(chosen: list[str]) -> float:
        return len(good & set(chosen)) / 10

    config = SimulatedUsersConfig(dataset="ml-100k", pool_users=30, budget=10, policy_iterations=150, policy_lr=0.1)
    logits, curve = train_policy(features, reward, users, config, seed=0)
    assert len(good & set(top_users(users, logits, 10))) >= 8
    assert np.mean(curve[-20:]) > np.mean(curve[:20])


def test_user_features_are_scaled_and_volume_follows_history_length(served: ServedTable) -> None:
    split = served.split
    assert isinstance(split, ColdSplit)
    users = pool_users(split, 12, 0)
    features = user_features(served, users)
    assert features.shape == (12, len(FEATURES)) and features.min() >= 0 and features.max() <= 1
    lengths = np.array([len(split.train[u]) for u in users])
    volume = features[:, FEATURES.index("V")]
    assert np.all(np.diff(volume[np.argsort(lengths, kind="stable")]) >= 0)


@pytest.mark.parametrize("judge", ["llm", "real"])
def test_the_experiment_writes_its_report_and_reuses_the_pool(judge: str, served: ServedTable, data: Path,
                                                              tiny_engine: TransformersEngine, module_artifacts: Path,
                                                              tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "experiment", "simulated-users", "--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny",
        "--judge", judge, "--pool-users", "12", "--pairs-per-user", "2", "--budget", "4", "--seeds", "2",
        "--policy-iterations", "3", "--refine-steps", "5", "--refine-l2", "0.1,10", "--bootstrap", "50",
        "--per-item-users", "3", "--out-dir", str(tmp_path)])
    config = config_from_args(SimulatedUsersConfig, args)
    md, js = simulated_users(config, "reasonrec experiment simulated-users ...", tiny_engine, HashEncoder())
    report = json.loads(js.read_text())
    rules = {row["rule"]: row for row in report["rules"]}
    assert set(rules) == {"none", "random", "feature", "policy", "all"} | ({"per-item"} if judge == "llm" else set())
    assert rules["none"]["gain_recall50"]["mean"] == 0 and rules["random"]["runs"] == 2
    assert all(len(run["chosen"]) == 4 for rule in ("random", "feature", "policy") for run in report["runs"][rule])
    assert len(report["runs"]["all"][0]["chosen"]) == 12
    assert all("test_ranks" not in run and set(run["metrics"]) == set(rules["none"]["metrics"])
               for runs in report["runs"].values() for run in runs)
    assert "| rule |" in md.read_text() and md.name == f"ml-1m-zip-cold-items-simulated-users-{judge}.md"
    sweep = report["refine_l2"]["sweep"]
    assert [row["l2"] for row in sweep] == [None, 0.1, 10.0] and report["refine_l2"]["chosen"] in (0.1, 10.0)
    kept = [row for row in sweep[1:] if row["kept"]]
    if kept:  # the chosen strength is the best validation cold figure within the warm floor
        assert report["refine_l2"]["chosen"] == max(kept, key=lambda r: r["valid cold Recall@50"])["l2"]
    pools = list((module_artifacts / "simulated-users").glob("*.jsonl"))
    if judge == "llm":
        assert report["pairs_asked"] == {"valid": 24, "test": 24} and report["judge_accuracy"]
        assert len(pools) == 3 and all(len(pool.read_text().splitlines()) == 12 for pool in pools)
        assert isinstance(served.split, ColdSplit)  # the gateway's rule: each test cold item asked of 3 users
        assert report["runs"]["per-item"][0]["pairs"] == 3 * len(served.split.test_items)
        assert report["per_item_l2"]["chosen"] in (0.1, 10.0) and len(report["per_item_l2"]["sweep"]) == 3

        class Refusing:
            def __getattr__(self, name: str) -> object:
                return getattr(tiny_engine, name)

            def choice_probs(self, *args: object) -> np.ndarray:
                raise AssertionError("the pool's answers are on disk: nothing is asked again")

        again = json.loads(simulated_users(config, "again", Refusing(), HashEncoder())[1].read_text())  # type: ignore[arg-type]
        assert again["rules"] == report["rules"]
    else:
        assert report["judge_accuracy"] == {} and 0 < report["pairs_asked"]["test"] <= 24


def test_the_report_is_named_by_its_judge_and_pool_seed() -> None:
    assert SimulatedUsersConfig(dataset="ml-100k").label == "llm"
    assert SimulatedUsersConfig(dataset="ml-100k", judge="real", pool_seed=2).label == "real-pool2"
    assert SimulatedUsersConfig(dataset="ml-100k", judge_adapter=Path("adapters/judge-a")).label == "llm-judge-a"
    with pytest.raises(ValueError, match="judge-adapter"):
        SimulatedUsersConfig(dataset="ml-100k", judge="real", judge_adapter=Path("adapters/judge-a"))
