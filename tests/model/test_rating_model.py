"""The rating model: biases with a known answer, the fold-in equal to the ALS user step, factors that help on
low-rank data, the artifact, unknown items; the head on the tiny model's states at `<rate>`."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.core.catalog import Item
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import HistoryLine, direct_rating_prompt, render_chat
from model.rating.factors import RatingModel, Ratings, als_step, fit_als, ridge_groups
from model.rating.states import RATE_MARKER, RateStateReader
from trainer.experiments.rating_head import fit_ridge


def grid_ratings(values: np.ndarray) -> Ratings:
    users, items = np.nonzero(~np.isnan(values))
    return Ratings(users, items, values[users, items])


def test_biases_are_recovered_on_a_toy_set_with_a_known_answer():
    mu, user_bias, item_bias = 3.5, np.array([0.5, -0.25, -0.25]), np.array([1.0, 0.0, -0.5, -0.5])
    data = grid_ratings(mu + user_bias[:, None] + item_bias[None, :])
    mean, fitted_bias, factors = fit_als(data, 3, 4, k=0, regs=(1e-9, 1e-9, 1.0), sweeps=5)
    assert mean == pytest.approx(mu) and factors.shape == (4, 0)
    np.testing.assert_allclose(fitted_bias, item_bias, atol=1e-6)
    model = RatingModel(["a", "b", "c", "d"], mean, fitted_bias, factors, 1e-9, 1.0)
    b_u, p_u = model.fold_in(["a", "b", "c", "d"], list(mu + user_bias[0] + item_bias))
    assert b_u == pytest.approx(user_bias[0], abs=1e-6) and p_u.shape == (0,)
    assert model.predict(b_u, p_u, ["c"])[0] == pytest.approx(mu + user_bias[0] + item_bias[2], abs=1e-6)


def test_a_regularised_user_bias_is_the_shrunk_mean_residual():
    model = RatingModel(["a", "b"], 3.0, np.array([0.5, -0.5]), np.zeros((2, 0)), reg_bias=2.0, reg_factor=1.0)
    b_u, _ = model.fold_in(["a", "b", "a"], [5.0, 3.0, None])  # the unrated entry does not count
    assert b_u == pytest.approx(((5 - 3.5) + (3 - 2.5)) / (2 + 2.0))


def test_fold_in_is_the_als_user_step():
    rng = np.random.default_rng(0)
    data = Ratings(rng.integers(0, 6, 80), rng.integers(0, 9, 80), rng.integers(1, 6, 80).astype(float))
    mean, item_bias, item_factors = fit_als(data, 6, 9, k=3, regs=(2.0, 3.0, 4.0), sweeps=3)
    user_bias, user_factors, _, _ = als_step(data, 6, 9, mean, item_bias, item_factors, (2.0, 3.0, 4.0))
    model = RatingModel([str(i) for i in range(9)], mean, item_bias, item_factors, 2.0, 4.0)
    for user in range(6):
        rows = data.users == user
        b_u, p_u = model.fold_in([str(i) for i in data.items[rows]], list(data.values[rows]))
        assert b_u == pytest.approx(user_bias[user]) and np.allclose(p_u, user_factors[user])


def test_ridge_groups_leaves_a_group_without_rows_at_zero():
    out = ridge_groups(np.array([0, 0, 2]), 3, np.ones((3, 2)), np.array([1.0, 2.0, 3.0]), 1.0, 1.0)
    assert np.all(out[1] == 0) and np.any(out[0] != 0)


def test_factors_beat_biases_on_low_rank_ratings():
    rng = np.random.default_rng(1)
    users, items = rng.normal(size=(60, 2)), rng.normal(size=(40, 2))
    full = 3.0 + users @ items.T
    mask = rng.random(full.shape) < 0.5
    train = grid_ratings(np.where(mask, full, np.nan))
    held = grid_ratings(np.where(~mask, full, np.nan))
    errors = {}
    for k in (0, 2):
        mean, bias, factors = fit_als(train, 60, 40, k=k, regs=(0.1, 0.1, 0.1), sweeps=15)
        model = RatingModel([str(i) for i in range(40)], mean, bias, factors, 0.1, 0.1)
        predicted = []
        for u, i in zip(held.users, held.items, strict=True):
            rows = train.users == u
            b_u, p_u = model.fold_in([str(j) for j in train.items[rows]], list(train.values[rows]))
            predicted.append(model.predict(b_u, p_u, [str(i)], clip=False)[0])
        errors[k] = float(np.sqrt(np.mean((np.array(predicted) - held.values) ** 2)))
    assert errors[2] < 0.1 < errors[0]


def test_the_artifact_round_trips_and_unknown_items_get_no_item_terms(tmp_path):
    model = RatingModel(["a", "b"], 3.6, np.array([0.4, -0.2]), np.array([[0.1, 0.2], [0.3, -0.1]]), 5.0, 20.0)
    model.save(tmp_path, {"status": "done"})
    loaded = RatingModel.load(tmp_path)
    assert loaded.item_ids == ["a", "b"] and loaded.reg_factor == 20.0 and not loaded.uses_head
    np.testing.assert_allclose(loaded.item_factors, model.item_factors, atol=1e-7)
    b_u, p_u = loaded.fold_in(["a", "zzz"], [5.0, 1.0])  # the unknown item is not read
    assert loaded.predict(b_u, p_u, ["hot-added"])[0] == pytest.approx(3.6 + b_u)
    assert loaded.predict(*loaded.fold_in([None], [4.0]), ["a"])[0] == pytest.approx(4.0)
    with pytest.raises(FileNotFoundError, match="train-rating"):
        RatingModel.load(tmp_path / "missing")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_states_at_rate_of_one_shared_pass_equal_separate_passes(tiny):
    reader = RateStateReader(tiny.model, tiny.tokenizer)
    history = [HistoryLine(f"Film {i} ({1970 + i})", float(i % 5 + 1), 978_300_000 + 86_400 * 31 * i)
               for i in range(12)]
    items = [Item(str(i), f"Target {i}", ("Drama",) * (i % 2), 1990 + i, 3.0 + i / 10, 5) for i in range(5)]
    read = reader.read(history, items)
    assert reader.stats == {"shared": 5, "full_pass": 0}
    engine = TransformersEngine(tiny)
    prompts = [direct_rating_prompt(history, item) for item in items]
    for j, prompt in enumerate(prompts):
        ids = tiny.tokenizer(render_chat(tiny.tokenizer, prompt, RATE_MARKER), add_special_tokens=False,
                             return_tensors="pt")["input_ids"]
        alone = tiny.model.get_decoder()(input_ids=ids).last_hidden_state[0, -1].detach().numpy()
        np.testing.assert_allclose(read.states[j], alone, atol=1e-4)
    probabilities = engine.choice_probs(prompts, [RATE_MARKER] * 5, ["1", "2", "3", "4", "5"])
    np.testing.assert_allclose(read.probabilities, probabilities, atol=1e-5)
    assert np.all((read.expected >= 1) & (read.expected <= 5))


def test_a_head_on_tiny_states_learns_a_linear_residual_and_is_added_to_the_rating(tiny):
    reader = RateStateReader(tiny.model, tiny.tokenizer)
    history = [HistoryLine("Alien (1979)", 5.0, 978_300_000), HistoryLine("Big (1988)", 2.0, 978_400_000)]
    items = [Item(str(i), f"Film number {i}", (), 1950 + i, None, 0) for i in range(40)]
    states = reader.read(history, items).states
    truth = np.random.default_rng(0).normal(size=states.shape[1])
    residual = (states - states.mean(axis=0)) @ truth * 0.01 + 0.3
    head = fit_ridge(states, residual, 1e-6)
    np.testing.assert_allclose(states @ head[:-1] + head[-1], residual, atol=1e-3)
    model = RatingModel([it.item_id for it in items], 3.0, np.zeros(40), np.zeros((40, 0)), 1.0, 1.0, head=head)
    predicted = model.predict(0.0, np.zeros(0), [items[3].item_id], states=states[3:4], clip=False)
    assert predicted[0] == pytest.approx(3.0 + residual[3], abs=1e-3)
    with pytest.raises(ValueError, match="head"):
        model.predict(0.0, np.zeros(0), ["1"])
