"""An experiment (`reasonrec experiment rating-head`): a head on the language model's state at `<rate>` added to the
rating model (`model.rating.factors`, `model.rating.states`), stacking on out-of-sample residuals. On ML-1M it was
no gain beyond its interval (RMSE gain +.0023 [-.0011, +.0059], docs/results/ml-1m-ratings.md), so the served
model has none; `reasonrec eval-rating` adds this run's rows to the rating report when its folder exists.

The job trains the rating model as `reasonrec train-rating` does (its own folder), refits the selected settings
on the training part alone, and fits the head on that model's validation residuals.

The states are slow (about a second per rating on 2 CPU cores, even with one pass per history), so the head is
fitted and measured on seeded samples: validation ratings of `head_ratings` worth of users (up to `head_per_user`
each, all of one user's sharing a pass), with targets = true rating - the selected model's prediction fitted on
the training part (the same out-of-sample residual the served model leaves); the ridge weight is chosen on
validation ratings of other users; the effect is measured on a sample of test ratings against the refitted
model. States are cached on disk per history (`trainer.batch_cache`), so an interrupted run resumes.
The same pass gives the language model's own guided `direct` rating (the expectation over 1..5), reported
beside it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.engines.loading import load_model
from model.prompts import RATING_TEMPLATE_VERSION, HistoryLine, direct_rating_prompt, display_title
from model.rating.factors import HEAD_EVAL_FILE, RatingModel
from model.rating.states import RateStateReader
from trainer.batch_cache import BatchCache
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.rating_split import TEST, TRAIN, VALID, RatingSplit, rating_split
from trainer.protocol.metrics import rating_summary
from trainer.train.rating import RatingTrainConfig, fit_rating_model, train_rating

log = logging.getLogger(__name__)
RIDGE_WEIGHTS = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5)
Groups = list[tuple[int, np.ndarray]]


@dataclass
class RatingHeadConfig(RatingTrainConfig):
    """What `reasonrec experiment rating-head` fits: the rating model's settings, then the head's."""

    model: str = "smollm2"
    """Language model of the head's states: smollm2, tiny or an HF folder."""
    head_ratings: int = 2000
    """Seeded validation ratings the head is fitted on."""
    head_valid_ratings: int = 500
    """Seeded validation ratings (other users) that choose the head's ridge weight."""
    head_test_ratings: int = 500
    """Seeded test ratings the head is measured on."""
    head_per_user: int = 10
    """At most this many target ratings per sampled user (they share one pass over the history)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.head_ratings, self.head_valid_ratings, self.head_test_ratings, self.head_per_user) < 1:
            raise ValueError("--head-ratings, --head-valid-ratings, --head-test-ratings, --head-per-user must be >= 1")

    @property
    def folder(self) -> Path:
        return self.out_dir or super().folder.with_name(super().folder.name + "-head")


def train_rating_head(config: RatingHeadConfig, command: str = "") -> RatingModel:
    """The rating model of these settings with the head (resumable: a finished model is trained once)."""
    model = train_rating(config, command)
    if model.uses_head:
        return model
    ds = load_dataset(config.dataset, config.data_path)
    split = rating_split(ds, config.valid_frac, config.test_frac)
    chosen = model.meta["chosen"]
    selected = fit_rating_model(config, split, (TRAIN,), chosen["reg_factor"], chosen["sweeps"])
    model = fit_head(config, ds, split, selected, model, config.folder)
    model.save(config.folder, model.meta)
    return model


def sample_groups(split: RatingSplit, part: int, n_ratings: int, per_user: int, seed: int,
                  exclude: set[int] = frozenset()) -> Groups:  # type: ignore[assignment]
    """(user, target rows) of seeded users with ratings in `part` (not in `exclude`): each user's first
    `per_user` ratings of the part, until `n_ratings` are taken."""
    targets = split.targets(part)
    users = sorted(set(split.users[targets].tolist()) - set(exclude))
    random.Random(seed).shuffle(users)
    starts = np.searchsorted(split.users[targets], np.arange(split.n_users + 1))
    groups, total = [], 0
    for user in users:
        rows = targets[starts[user] : starts[user + 1]][: min(per_user, n_ratings - total)]
        groups.append((user, rows))
        total += len(rows)
        if total >= n_ratings:
            break
    return groups


def group_states(reader: RateStateReader, cache: BatchCache, ds: Dataset, split: RatingSplit, part: int,
                 groups: Groups, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(states (n, hidden), probabilities of 1..5 (n, 5)) of every target of `groups`, in order."""
    catalog = split.catalog_before(ds.catalog, part)
    histories = split.history_rows(part)
    out = []
    for user, rows in tqdm(groups, desc=desc, unit="history"):
        lines = [HistoryLine(display_title(catalog[split.item_ids[i]]), float(r), int(t)) for i, r, t in
                 zip(split.items[histories[user]], split.values[histories[user]],
                     split.timestamps[histories[user]], strict=True)]
        items = [catalog[split.item_ids[i]] for i in split.items[rows]]

        def compute(_: list[str], lines: list[HistoryLine] = lines, items: list = items) -> np.ndarray:
            read = reader.read(lines, items)
            return np.hstack([read.states, read.probabilities])

        out.append(cache.get_or_compute([direct_rating_prompt(lines, item) for item in items], compute))
    both = np.vstack(out)
    return both[:, :-5], both[:, -5:]


def fit_ridge(states: np.ndarray, residual: np.ndarray, weight: float) -> np.ndarray:
    """[w, c] minimising |residual - states w - c|^2 + weight |w / sd|^2 over standardised states."""
    center, scale = states.mean(axis=0), states.std(axis=0) + 1e-6
    x = (states - center) / scale
    coef = np.linalg.solve(x.T @ x + weight * np.eye(x.shape[1]), x.T @ (residual - residual.mean()))
    w = coef / scale
    return np.append(w, residual.mean() - center @ w)


def fit_head(config: RatingHeadConfig, ds: Dataset, split: RatingSplit, selected: RatingModel, model: RatingModel,
             folder: Path) -> RatingModel:
    """`model` with a head fitted on `selected`'s validation residuals; measured on a test sample (meta["head"],
    `head-eval.npz`)."""
    loaded = load_model(config.model)
    reader = RateStateReader(loaded.model, loaded.tokenizer)
    cache = BatchCache(folder / "states", {"fingerprint": loaded.fingerprint.to_json(),
                                           "rating_template": RATING_TEMPLATE_VERSION})
    seed, per_user = config.seed, config.head_per_user
    fit_groups = sample_groups(split, VALID, config.head_ratings, per_user, seed)
    choose_groups = sample_groups(split, VALID, config.head_valid_ratings, per_user, seed,
                                  {u for u, _ in fit_groups})
    test_groups = sample_groups(split, TEST, config.head_test_ratings, per_user, seed + 1)
    base_valid = split.fold_in_predictions(selected, VALID, clip=False)
    position = {row: j for j, row in enumerate(split.targets(VALID))}

    def residuals(groups: Groups) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([r for _, r in groups])
        base = base_valid[[position[r] for r in rows]]
        return base, split.values[rows] - base

    fit_states, _ = group_states(reader, cache, ds, split, VALID, fit_groups, "head states (fit)")
    choose_states, _ = group_states(reader, cache, ds, split, VALID, choose_groups, "head states (choose)")
    _, fit_residual = residuals(fit_groups)
    choose_base, choose_residual = residuals(choose_groups)
    scores = {}
    for weight in RIDGE_WEIGHTS:
        head = fit_ridge(fit_states, fit_residual, weight)
        predicted = np.clip(choose_base + choose_states @ head[:-1] + head[-1], 1, 5)
        scores[weight] = float(np.sqrt(np.mean((predicted - choose_base - choose_residual) ** 2)))
    weight = min(scores, key=scores.__getitem__)
    head = fit_ridge(fit_states, fit_residual, weight)
    log.info("head ridge weight %g (choice RMSE %s); without the head %.4f", weight, scores,
             float(np.sqrt(np.mean((np.clip(choose_base, 1, 5) - choose_base - choose_residual) ** 2))))

    test_states, test_probs = group_states(reader, cache, ds, split, TEST, test_groups, "head states (test)")
    rows = np.concatenate([r for _, r in test_groups])
    position = {row: j for j, row in enumerate(split.targets(TEST))}
    base = split.fold_in_predictions(model, TEST, clip=False)[[position[r] for r in rows]]
    llm = test_probs @ np.arange(1, 6)
    rows_out = {"model": np.clip(base, 1, 5), "model + head": np.clip(base + test_states @ head[:-1] + head[-1], 1, 5),
                "LLM guided direct": llm}
    np.savez(folder / HEAD_EVAL_FILE, rows=rows, **{k.replace(" ", "_"): v for k, v in rows_out.items()})
    truth = split.values[rows]
    summary = {name: rating_summary(pred, truth, 1000, seed) for name, pred in rows_out.items()}
    delta = rows_out["model + head"] - truth
    model.head = head
    model.meta["head"] = {
        "fingerprint": loaded.fingerprint.to_json(), "rating_template": RATING_TEMPLATE_VERSION,
        "samples": {"fit": sum(len(r) for _, r in fit_groups), "choose": sum(len(r) for _, r in choose_groups),
                    "test": len(rows), "test_users": len(test_groups)},
        "ridge_weight": weight, "choice_rmse": scores, "test": summary,
        "rmse_gain_ci95": paired_rmse_gain(rows_out["model"] - truth, delta, 1000, seed),
        "state_passes": dict(reader.stats)}
    return model


def paired_rmse_gain(errors_a: np.ndarray, errors_b: np.ndarray, n_resamples: int, seed: int) -> dict:
    """RMSE(a) - RMSE(b) on the same ratings with its percentile bootstrap interval (ratings resampled)."""
    picks = np.random.default_rng(seed).integers(0, len(errors_a), size=(n_resamples, len(errors_a)))
    gains = np.sqrt((errors_a[picks] ** 2).mean(axis=1)) - np.sqrt((errors_b[picks] ** 2).mean(axis=1))
    return {"mean": float(np.sqrt(np.mean(errors_a**2)) - np.sqrt(np.mean(errors_b**2))),
            "ci95": tuple(float(x) for x in np.quantile(gains, [0.025, 0.975]))}
