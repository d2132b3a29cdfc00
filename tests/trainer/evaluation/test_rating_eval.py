"""Rating evaluation (trainer.evaluation.ratings, trainer.protocol.metrics.rating_summary): the baselines use training
ratings only, and MAE/RMSE/accuracy/macro-F1 match hand computations."""

from __future__ import annotations

import numpy as np

from trainer.data.datasets import Interaction
from trainer.data.splits import Example
from trainer.evaluation.ratings import baseline_predictions
from trainer.protocol.metrics import macro_f1, rating_summary, rounded_rating


def test_baselines_use_training_ratings_only() -> None:
    train = {"u": [Interaction("u", "a", 5.0, 1), Interaction("u", "b", 3.0, 2)],
             "v": [Interaction("v", "a", 1.0, 1), Interaction("v", "c", None, 2)]}
    examples = [Example("u", train["u"], Interaction("u", "c", 1.0, 3)),  # the held-out 1.0 must not count
                Example("w", [], Interaction("w", "a", 4.0, 3))]
    predictions = baseline_predictions(examples, train)
    np.testing.assert_allclose(predictions["global-mean"], [3.0, 3.0])
    np.testing.assert_allclose(predictions["user-mean"], [4.0, 3.0])  # unknown user: global mean
    np.testing.assert_allclose(predictions["item-mean"], [3.0, 3.0])  # item c has no rating: global mean


def test_rating_summary_matches_hand_computation() -> None:
    predicted, true = np.array([3.5, 4.4, 1.2, 2.5]), np.array([4.0, 4.0, 2.0, 2.0])
    assert rounded_rating(predicted).tolist() == [4, 4, 1, 3]  # half up
    summary = rating_summary(predicted, true, n_resamples=200)
    assert np.isclose(summary["MAE"]["mean"], (0.5 + 0.4 + 0.8 + 0.5) / 4)
    assert np.isclose(summary["RMSE"]["mean"], np.sqrt((0.25 + 0.16 + 0.64 + 0.25) / 4))
    assert summary["accuracy"]["mean"] == 0.5
    # labels {1, 2, 3, 4}: F1(4) = 1, F1(1) = F1(2) = F1(3) = 0
    assert np.isclose(summary["macro_F1"]["mean"], 0.25)
    for metric in summary.values():
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]


def test_macro_f1_averages_over_present_labels() -> None:
    assert macro_f1(np.array([1, 2, 2, 5]), np.array([1, 2, 3, 5])) == np.mean([1.0, 2 / 3, 0.0, 1.0])
