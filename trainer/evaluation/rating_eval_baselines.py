"""Reference rows of the rating report (docs/design.md section 6): the global, user and item means, and a plain
matrix factorisation trained by stochastic gradient descent, Funk's SVD as Koren, Bell & Volinsky describe it
("Matrix Factorization Techniques for Recommender Systems", IEEE Computer 2009) and Surprise implements it
(`SVD`: biased, N(0, 0.1^2) initialisation, learning rate .005, regularisation .02, 20 epochs).

These rows keep a parameter per user id (they are transductive): they predict the users they were fitted on,
which the service cannot do (it knows a request's history only); the served model folds its users in
(`model.rating.factors`).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from model.rating.factors import Ratings


def mean_predictions(fit: Ratings, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Global mean, user mean and item mean of `fit` at (users, items); a user or item without a rating in `fit`
    gets the global mean."""
    mean = float(fit.values.mean())

    def means(codes: np.ndarray, n: int) -> np.ndarray:
        counts = np.bincount(codes, minlength=n)
        sums = np.bincount(codes, weights=fit.values, minlength=n)
        return np.where(counts > 0, sums / np.maximum(counts, 1), mean)

    return {"global mean": np.full(len(users), mean), "user mean": means(fit.users, n_users)[users],
            "item mean": means(fit.items, n_items)[items]}


def sgd_mf(fit: Ratings, n_users: int, n_items: int, k: int = 50, epochs: int = 20, lr: float = 0.005,
           reg: float = 0.02, batch: int = 128, seed: int = 0
           ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mu, b_u, p_u, b_i, q_i) of biased MF by SGD over the ratings in a seeded random order each epoch. Updates
    are those of per-rating SGD, applied `batch` ratings at a time (the ratings of one batch see the parameters
    from before it; with thousands of users and items a batch rarely holds a user or item twice)."""
    rng = np.random.default_rng(seed)
    mean = float(fit.values.mean())
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
    user_factors = rng.normal(0.0, 0.1, (n_users, k))
    item_factors = rng.normal(0.0, 0.1, (n_items, k))
    for _ in tqdm(range(epochs), desc=f"SGD MF k={k}", unit="epoch", leave=False):
        order = rng.permutation(len(fit))
        for first in range(0, len(order), batch):
            rows = order[first : first + batch]
            u, i = fit.users[rows], fit.items[rows]
            pu, qi = user_factors[u], item_factors[i]
            err = fit.values[rows] - (mean + user_bias[u] + item_bias[i] + np.einsum("nk,nk->n", pu, qi))
            np.add.at(user_bias, u, lr * (err - reg * user_bias[u]))
            np.add.at(item_bias, i, lr * (err - reg * item_bias[i]))
            np.add.at(user_factors, u, lr * (err[:, None] * qi - reg * pu))
            np.add.at(item_factors, i, lr * (err[:, None] * pu - reg * qi))
    return mean, user_bias, user_factors, item_bias, item_factors


def mf_predictions(params: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray], users: np.ndarray,
                   items: np.ndarray) -> np.ndarray:
    """Clipped predictions of `sgd_mf`'s parameters at (users, items)."""
    mean, user_bias, user_factors, item_bias, item_factors = params
    raw = mean + user_bias[users] + item_bias[items] + np.einsum("nk,nk->n", user_factors[users], item_factors[items])
    return np.clip(raw, 1.0, 5.0)
