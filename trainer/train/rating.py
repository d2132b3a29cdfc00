"""The rating-model job (`reasonrec train-rating`): the model `/rate` serves (`model.rating.factors`; docs/design.md
section 5), biases and factors after Koren (KDD 2008; with Bell & Volinsky, IEEE Computer 2009).

On the rating protocol (`trainer.data.rating_split`: per user the last 10% of ratings test, the 10%
before validation):
1. Selection: for each factor regularisation of the grid, ALS on the training part, a sweep at a time; after
   each sweep the validation part is predicted with every user folded in from their training ratings (as the
   service would), and the run stops when validation RMSE has not improved for `patience` sweeps. Resumable
   per grid point (`progress.json`).
2. Refit: ALS on training + validation with the chosen regularisation and sweep count: the served model.
3. Test metrics of the served model: the test part, every user folded in from training + validation ratings.
The artifact goes to `artifacts/rating/<dataset>-seed<seed>/` (`rating.json` names command, data, split, seed,
selection, metrics and machine).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from indexer.core.durable import replace_text
from indexer.core.paths import rating_dir
from model.rating.factors import META_FILE, RatingModel, SweepHook, finished_rating_model, fit_als
from trainer.data.protocols import check_same_run
from trainer.data.rating_split import TEST, TRAIN, VALID, RatingData, RatingSplit
from trainer.machine import machine_line

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"


@dataclass
class RatingTrainConfig(RatingData):
    """What `reasonrec train-rating` trains (defaults: the recipe measured on ML-1M, docs/results/ml-1m-ratings.md)."""

    k: int = 50
    """Factors per item and user; 0 = biases only (BaselineOnly)."""
    reg_user_bias: float = 5.0
    """Ridge weight on a user's bias (in training and in every fold-in)."""
    reg_item_bias: float = 5.0
    """Ridge weight on an item's bias."""
    reg_factors: tuple[float, ...] = (15.0, 20.0, 25.0)
    """Ridge weights on the factors to choose from on validation RMSE."""
    max_sweeps: int = 20
    """At most this many ALS sweeps (users, then items)."""
    patience: int = 2
    """Stop after this many sweeps without a better validation RMSE."""
    seed: int = 0
    """Seed of the factor initialisation."""
    out_dir: Path | None = None
    """Artifact folder; default `artifacts/rating/<dataset>-seed<seed>`."""

    def __post_init__(self) -> None:
        self.check_rating_data()
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.reg_factors = tuple(float(r) for r in self.reg_factors)
        if self.k < 0 or min(self.max_sweeps, self.patience) < 1:
            raise ValueError("--k must be >= 0, --max-sweeps and --patience >= 1")
        if not self.reg_factors or min(self.reg_factors) <= 0 or min(self.reg_user_bias, self.reg_item_bias) <= 0:
            raise ValueError("--reg-factors needs at least one value; every regularisation must be positive")

    @property
    def folder(self) -> Path:
        return self.out_dir or rating_dir(self.dataset, self.seed)

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where it is written)."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if k != "out_dir"}


def train_rating(config: RatingTrainConfig, command: str = "") -> RatingModel:
    """Train (or resume, or return the finished artifact)."""
    folder = config.folder
    if (folder / META_FILE).is_file():
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        check_same_run(folder, meta.get("config", {}), config.fingerprint(), "rating-model")
        if finished_rating_model(folder):
            return RatingModel.load(folder)
    ds, split = config.load_split()
    log.info("rating model on %s: %s", ds.name, split.describe())
    progress = _select(config, split, folder)
    start = time.perf_counter()  # the selection's seconds are in `progress` (over every run that resumed it)
    best = min(progress["grid"], key=lambda g: g["best_rmse"])
    model = fit_rating_model(config, split, (TRAIN, VALID), best["reg_factor"], best["best_sweeps"])
    meta = {"status": "base done", "command": command, "config": config.fingerprint(),
            "model": f"mu + b_u + b_i + p_u . q_i (ALS, k={config.k}; users folded in from their history)",
            "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                     "ratings": len(split.values)},
            "split": split.describe(), "seed": config.seed, "selection": progress["grid"],
            "chosen": {"reg_factor": best["reg_factor"], "sweeps": best["best_sweeps"]},
            "metrics": {"valid_rmse_selection": best["best_rmse"], "test": _metrics(model, split)},
            "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    model.save(folder, meta)
    model.save(folder, {**model.meta, "status": "done",
                        "train_seconds": round(progress["seconds"] + time.perf_counter() - start, 1)})
    (folder / PROGRESS_FILE).unlink(missing_ok=True)
    return model


def _metrics(model: RatingModel, split: RatingSplit) -> dict[str, float]:
    predicted = split.fold_in_predictions(model, TEST)
    error = predicted - split.values[split.targets(TEST)]
    return {"RMSE": float(np.sqrt(np.mean(error**2))), "MAE": float(np.mean(np.abs(error)))}


def fit_rating_model(config: RatingTrainConfig, split: RatingSplit, parts: tuple[int, ...], reg_factor: float,
                     sweeps: int, on_sweep: SweepHook | None = None) -> RatingModel:
    """ALS on the given parts of the split with this regularisation and number of sweeps."""
    regs = (config.reg_user_bias, config.reg_item_bias, reg_factor)
    mean, bias, factors = fit_als(split.ratings(*parts), split.n_users, split.n_items, config.k, regs, sweeps,
                                  config.seed, on_sweep)
    return RatingModel(split.item_ids, mean, bias, factors, config.reg_user_bias, reg_factor)


def _select(config: RatingTrainConfig, split: RatingSplit, folder: Path) -> dict:
    """Fit on train for each regularisation of the grid with early stopping on validation; resumable per point."""
    path = folder / PROGRESS_FILE
    progress = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"grid": [], "seconds": 0.0}
    if progress.get("config", config.fingerprint()) != config.fingerprint():
        raise ValueError(f"{path} belongs to a run with other settings; pass --out-dir or delete it")
    done = {g["reg_factor"] for g in progress["grid"]}
    for reg_factor in (r for r in config.reg_factors if r not in done):
        start = time.perf_counter()
        progress["grid"].append(_select_one(config, split, reg_factor))
        progress["seconds"] += time.perf_counter() - start
        progress["config"] = config.fingerprint()
        folder.mkdir(parents=True, exist_ok=True)
        replace_text(path, json.dumps(progress, indent=1))
    return progress


def _select_one(config: RatingTrainConfig, split: RatingSplit, reg_factor: float) -> dict:
    """ALS on the training part with early stopping on validation RMSE (users folded in from training)."""
    history: list[float] = []
    truth = split.values[split.targets(VALID)]
    mean = float(split.ratings(TRAIN).values.mean())

    def on_sweep(sweep: int, bias: np.ndarray, factors: np.ndarray) -> bool:
        model = RatingModel(split.item_ids, mean, bias, factors, config.reg_user_bias, reg_factor)
        history.append(float(np.sqrt(np.mean((split.fold_in_predictions(model, VALID) - truth) ** 2))))
        log.info("reg_factor %g, sweep %d: valid RMSE %.4f", reg_factor, sweep, history[-1])
        return len(history) - 1 - int(np.argmin(history)) >= config.patience

    fit_rating_model(config, split, (TRAIN,), reg_factor, config.max_sweeps, on_sweep)
    return {"reg_factor": reg_factor, "valid_rmse": [round(r, 5) for r in history], "best_rmse": min(history),
            "best_sweeps": int(np.argmin(history)) + 1}


def finished_or_trained(train: RatingTrainConfig) -> RatingModel:
    """The finished model in `train.folder` (whatever settings made it; they are in its manifest), else the one
    `train` trains there."""
    return RatingModel.load(train.folder) if finished_rating_model(train.folder) else train_rating(train)
