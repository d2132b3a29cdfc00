"""The rating protocol, the rating-model job (selection, refit, resume, the head on the tiny model) and the
rating report written through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trainer_helpers import write_cycle_ml1m

from model.rating.factors import RatingModel
from trainer.cli import main
from trainer.data import load_dataset
from trainer.data.rating_split import TEST, TRAIN, VALID, held_out, rating_split
from trainer.evaluation.rating_eval_report import UserBootstrap, summary
from trainer.protocol.metrics import rating_summary
from trainer.train.rating import RatingTrainConfig, train_rating


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cycle_ml1m(tmp_path_factory.mktemp("ml1m"), n_users=40)


def test_the_rating_protocol_holds_out_each_users_latest_ratings(data):
    ds = load_dataset("ml-1m-zip", data)
    split = rating_split(ds)
    assert held_out(6, 0.1) == 1 and held_out(15, 0.1) == 2 and held_out(25, 0.1) == 3
    for u, user in enumerate(split.user_ids):
        rows = np.flatnonzero(split.users == u)
        n = len(ds.histories[user])
        assert list(split.parts[rows]) == sorted(split.parts[rows])  # train, then valid, then test, in time
        assert (split.parts[rows] == TEST).sum() == held_out(n, 0.1) and (split.parts[rows] == VALID).sum() >= 1
        assert list(split.timestamps[rows]) == sorted(split.timestamps[rows])
    history = split.history_rows(TEST)
    assert all(np.all(split.parts[rows] < TEST) for rows in history.values())


def test_batched_fold_in_predictions_equal_the_served_fold_in(data):
    split = rating_split(load_dataset("ml-1m-zip", data))
    rng = np.random.default_rng(0)
    model = RatingModel(split.item_ids, 3.3, rng.normal(0, 0.5, split.n_items), rng.normal(0, 0.5, (split.n_items, 3)),
                        2.0, 3.0)
    batched = split.fold_in_predictions(model, TEST)
    for j, row in enumerate(split.targets(TEST)):
        rows = split.history_rows(TEST)[int(split.users[row])]
        b_u, p_u = model.fold_in([split.item_ids[i] for i in split.items[rows]], list(split.values[rows]))
        assert batched[j] == pytest.approx(model.predict(b_u, p_u, [split.item_ids[split.items[row]]])[0])


def test_user_bootstrap_summary_has_the_usual_point_estimates():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(1, 6, 300).astype(float), rng.uniform(1, 5, 300)
    ours = summary(predicted, true, UserBootstrap(rng.integers(0, 40, 300), 200, 0))
    usual = rating_summary(predicted, true, 10, 0)
    for name in ("MAE", "RMSE", "accuracy", "macro_F1"):
        assert ours[name]["mean"] == pytest.approx(usual[name]["mean"])
        low, high = ours[name]["ci95"]
        assert low < ours[name]["mean"] < high


def test_the_job_selects_refits_resumes_and_refuses_other_settings(data, tmp_path):
    config = RatingTrainConfig("ml-1m-zip", data, k=2, reg_factors=(1.0, 5.0), max_sweeps=4, out_dir=tmp_path / "r")
    model = train_rating(config, "reasonrec train-rating (test)")
    meta = model.meta
    assert meta["status"] == "done" and meta["command"] == "reasonrec train-rating (test)" and model.k == 2
    assert {g["reg_factor"] for g in meta["selection"]} == {1.0, 5.0} and 1 <= meta["chosen"]["sweeps"] <= 4
    assert meta["metrics"]["test"]["RMSE"] > 0 and meta["machine"] and not (tmp_path / "r" / "progress.json").exists()
    split = rating_split(load_dataset("ml-1m-zip", data))
    assert model.mean == pytest.approx(split.ratings(TRAIN, VALID).values.mean())  # the refit saw validation too
    again = train_rating(config)
    np.testing.assert_array_equal(again.item_factors, RatingModel.load(tmp_path / "r").item_factors)
    with pytest.raises(ValueError, match="other settings"):
        train_rating(RatingTrainConfig("ml-1m-zip", data, k=3, out_dir=tmp_path / "r"))


def test_the_head_on_the_tiny_model_and_the_report_through_the_cli(data, tmp_path):
    common = ["--dataset", "ml-1m-zip", "--data-path", str(data), "--threads", "1"]
    small = ["--k", "2", "--reg-factors", "2", "--max-sweeps", "3"]
    assert main(["train-rating", *common, *small, "--out-dir", str(tmp_path / "served")]) == 0
    assert main(["experiment", "rating-head", *common, *small, "--model", "tiny", "--head-ratings", "30",
                 "--head-valid-ratings", "20", "--head-test-ratings", "20", "--head-per-user", "3",
                 "--out-dir", str(tmp_path / "head")]) == 0
    head = RatingModel.load(tmp_path / "head")
    assert head.uses_head and head.head.shape == (64 + 1,) and head.meta["head"]["samples"]["test"] == 20
    assert head.meta["head"]["state_passes"]["shared"] > 0 and (tmp_path / "head" / "head-eval.npz").is_file()
    assert main(["eval-rating", *common, "--rating-model", str(tmp_path / "served"), "--baseline-model",
                 str(tmp_path / "k0"), "--head-model", str(tmp_path / "head"), "--mf-epochs", "2", "--bootstrap",
                 "50", "--reasoning-sample", "40", "--out-dir", str(tmp_path / "docs")]) == 0
    report = json.loads((tmp_path / "docs" / "ml-1m-zip-ratings.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[:3] == ["global mean", "user mean", "item mean"] and any(n.startswith("served") for n in names)
    assert any(n.startswith("BaselineOnly") for n in names) and any(n.startswith("plain MF") for n in names)
    assert {row["ratings"] for row in report["rows"]} == {len(rating_split(load_dataset("ml-1m-zip", data))
                                                              .targets(TEST))}
    assert [row["name"] for row in report["sample_rows"]][-2:] == [
        "served + head on the LM state at <rate>", "LM guided direct rating (tiny-llama, expectation over 1..5)"]
    assert report["reasoning"][0].startswith("claims checked") and "false or unreadable: 0" in report["reasoning"][0]
    markdown = (tmp_path / "docs" / "ml-1m-zip-ratings.md").read_text()
    assert "- **command**:" in markdown and "What each term adds" in markdown
