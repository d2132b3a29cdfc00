"""The served rating model (docs/design.md sections 3 and 5): biases and factors learned by the trainer, the user's
part folded in from the request's history, and an optional head on the language model's state.

    r(u, i) = mu + b_u + b_i + p_u . q_i  [+ w . h + c]

- `mu + b_u + b_i` are the baseline estimates and `p_u . q_i` the factor term of Koren, "Factorization Meets the
  Neighborhood" (KDD 2008) and Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems"
  (IEEE Computer 2009), fitted by regularised alternating least squares (their "Learning algorithms" section).
- The service knows no user ids, only the history a request sends, so `b_u` and `p_u` are *folded in*: the ridge
  solution over the history's rated items with the item side fixed, which is exactly the user step of the ALS
  that trained the items (`fold_in`). A user with no usable rating gets b_u = 0, p_u = 0.
- Items outside the model (hot-added, unknown) get b_i = 0 and q_i = 0: the prediction is mu + b_u.
- Optional: a linear head on the language model's final state at `<rate>` after the direct rating prompt
  (`model.rating.states`), fitted on the residuals of the rest (`trainer.experiments.rating_head`).

The artifact (`RatingModel.save`/`load`) is a folder: `rating.safetensors` (item biases and factors, the
optional head) and `rating.json` (item ids, mu, the fold-in regularisation, shapes, data, metrics, command).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from indexer.core.durable import replace_text, replace_with

WEIGHTS_FILE = "rating.safetensors"
META_FILE = "rating.json"
HEAD_EVAL_FILE = "head-eval.npz"
"""Beside a model with a head (`reasonrec experiment rating-head`): its predictions on the seeded test sample."""
MAX_FOLD_IN = 200
"""Most recent rated history entries a fold-in reads (the API's history cap, `service.schemas.MAX_HISTORY`)."""


@dataclass
class RatingModel:
    """Item side of the model plus what the fold-in of a user needs; `predict` is the whole served formula."""

    item_ids: list[str]
    mean: float
    item_bias: np.ndarray
    """(n,) b_i."""
    item_factors: np.ndarray
    """(n, k) q_i; k = 0 for the biases-only model (BaselineOnly)."""
    reg_bias: float
    """Ridge weight on b_u in the fold-in (the ALS user step's)."""
    reg_factor: float
    """Ridge weight on p_u in the fold-in."""
    head: np.ndarray | None = None
    """(hidden + 1,) [w, c] of the state head, or None."""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_bias = np.asarray(self.item_bias, dtype=np.float64)
        self.item_factors = np.asarray(self.item_factors, dtype=np.float64).reshape(len(self.item_ids), -1)
        self.code_of = {item_id: code for code, item_id in enumerate(self.item_ids)}

    @property
    def k(self) -> int:
        return self.item_factors.shape[1]

    @property
    def uses_head(self) -> bool:
        return self.head is not None

    # ---- users ---------------------------------------------------------------------------------------------

    def fold_in(self, item_ids: Sequence[str | None], ratings: Sequence[float | None]) -> tuple[float, np.ndarray]:
        """(b_u, p_u) of a history: the ridge solution over its (at most `MAX_FOLD_IN` most recent) rated entries
        of items the model knows; (0, 0) when there is none."""
        pairs = [(self.code_of[i], float(r)) for i, r in zip(item_ids, ratings, strict=True)
                 if i is not None and r is not None and i in self.code_of][-MAX_FOLD_IN:]
        if not pairs:
            return 0.0, np.zeros(self.k)
        codes = np.array([c for c, _ in pairs])
        target = np.array([r for _, r in pairs]) - self.mean - self.item_bias[codes]
        theta = ridge_rows(self.item_factors[codes], target, self.reg_bias, self.reg_factor)
        return float(theta[0]), theta[1:]

    # ---- prediction ----------------------------------------------------------------------------------------

    def item_terms(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(b_i, q_i) of items; zeros for an item the model does not know (hot-added, unknown)."""
        codes = np.array([self.code_of.get(i, -1) for i in item_ids])
        known = codes >= 0
        bias = np.where(known, self.item_bias[np.maximum(codes, 0)], 0.0)
        factors = self.item_factors[np.maximum(codes, 0)] * known[:, None]
        return bias, factors

    def predict(self, user_bias: float, user_factors: np.ndarray, item_ids: Sequence[str],
                states: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
        """Ratings of `item_ids` for one folded-in user; `states` (n, hidden) feed the head (when the model has
        one)."""
        bias, factors = self.item_terms(item_ids)
        out = self.mean + user_bias + bias + factors @ user_factors
        if self.head is not None:
            if states is None:
                raise ValueError("this rating model has a head: pass the language model's states at <rate>")
            out = out + head_term(self.head, states)
        return np.clip(out, 1.0, 5.0) if clip else out

    # ---- artifact ------------------------------------------------------------------------------------------

    def save(self, folder: Path, meta: dict) -> None:
        """Write the weights, then `rating.json` (a folder with it is complete), each atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"item_bias": self.item_bias.astype(np.float32), "item_factors": self.item_factors.astype(np.float32)}
        if self.head is not None:
            tensors["head"] = self.head.astype(np.float32)
        replace_with(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
        self.meta = {**meta, "item_ids": self.item_ids, "mean": self.mean, "reg_bias": self.reg_bias,
                     "reg_factor": self.reg_factor, "k": self.k, "has_head": self.uses_head}
        replace_text(folder / META_FILE, json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> RatingModel:
        folder = Path(folder)
        if not (folder / META_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a rating model (needs {META_FILE} and {WEIGHTS_FILE}); train "
                                    "one with `reasonrec train-rating`")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        weights = load_file(str(folder / WEIGHTS_FILE))
        return cls(list(meta["item_ids"]), float(meta["mean"]), weights["item_bias"], weights["item_factors"],
                   float(meta["reg_bias"]), float(meta["reg_factor"]), weights.get("head"), meta)


def finished_rating_model(folder: Path) -> bool:
    """Whether `folder` holds the artifact of a finished `reasonrec train-rating` run."""
    meta = Path(folder) / META_FILE
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "done"


def head_term(head: np.ndarray, states: np.ndarray) -> np.ndarray:
    """w . h + c for states (n, hidden)."""
    return np.asarray(states, dtype=np.float64) @ head[:-1] + head[-1]


# ---- fitting (alternating least squares) ------------------------------------------------------------------


def ridge_rows(factors: np.ndarray, target: np.ndarray, reg_bias: float, reg_factor: float) -> np.ndarray:
    """argmin over [b, p] of |target - b - factors @ p|^2 + reg_bias b^2 + reg_factor |p|^2: (1 + k,)."""
    x = np.hstack([np.ones((len(factors), 1)), factors])
    gram = x.T @ x + np.diag([reg_bias] + [reg_factor] * factors.shape[1])
    return np.linalg.solve(gram, x.T @ target)


@dataclass
class Ratings:
    """Ratings as parallel arrays of user codes, item codes and values."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def ridge_groups(groups: np.ndarray, n_groups: int, other: np.ndarray, target: np.ndarray, reg_bias: float,
                 reg_factor: float) -> np.ndarray:
    """`ridge_rows` for every group at once: group g solves over its rows (groups[j] == g) with the factor rows
    `other[j]` and targets `target[j]`; (n_groups, 1 + k), zeros for a group without rows."""
    k = other.shape[1]
    order = np.argsort(groups, kind="stable")
    x = np.hstack([np.ones((len(order), 1)), other[order]])
    y = target[order]
    starts = np.searchsorted(groups[order], np.arange(n_groups + 1))
    gram = np.zeros((n_groups, k + 1, k + 1))
    rhs = np.zeros((n_groups, k + 1))
    for g in range(n_groups):
        rows = slice(starts[g], starts[g + 1])
        gram[g] = x[rows].T @ x[rows]
        rhs[g] = x[rows].T @ y[rows]
    gram += np.diag([reg_bias] + [reg_factor] * k)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def als_step(data: Ratings, n_users: int, n_items: int, mean: float, item_bias: np.ndarray, item_factors: np.ndarray,
             regs: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One ALS sweep: every user's (b_u, p_u) with the items fixed (= `RatingModel.fold_in`), then every item's
    (b_i, q_i) with the users fixed. `regs` = (user bias, item bias, factors). Returns (b_u, p_u, b_i, q_i)."""
    reg_user_bias, reg_item_bias, reg_factor = regs
    users = ridge_groups(data.users, n_users, item_factors[data.items],
                         data.values - mean - item_bias[data.items], reg_user_bias, reg_factor)
    user_bias, user_factors = users[:, 0], users[:, 1:]
    items = ridge_groups(data.items, n_items, user_factors[data.users],
                         data.values - mean - user_bias[data.users], reg_item_bias, reg_factor)
    return user_bias, user_factors, items[:, 0], items[:, 1:]


SweepHook = Callable[[int, np.ndarray, np.ndarray], bool]
"""Called after each ALS sweep with (sweep, b_i, q_i); True stops the fit (early stopping)."""


def fit_als(data: Ratings, n_users: int, n_items: int, k: int, regs: tuple[float, float, float], sweeps: int,
            seed: int = 0, on_sweep: SweepHook | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(mu, b_i, q_i) after `sweeps` ALS sweeps from q ~ N(0, 0.1^2) (seeded). `on_sweep(sweep, b_i, q_i)` is
    called after each sweep and may return True to stop (early stopping)."""
    mean = float(data.values.mean())
    item_bias = np.zeros(n_items)
    item_factors = np.random.default_rng(seed).normal(0.0, 0.1, (n_items, k))
    for sweep in tqdm(range(1, sweeps + 1), desc=f"ALS k={k}", unit="sweep", leave=False):
        _, _, item_bias, item_factors = als_step(data, n_users, n_items, mean, item_bias, item_factors, regs)
        if on_sweep is not None and on_sweep(sweep, item_bias, item_factors):
            break
    return mean, item_bias, item_factors
