"""Rating metrics with intervals over users, and the rating report's markdown (docs/design.md section 6).

A user's test ratings are predicted from one folded-in user and move together, so intervals resample users,
not ratings: each bootstrap resample draws the test users with replacement and weighs each user's ratings by how
often they were drawn (1000 resamples, seeded). MAE, RMSE, accuracy of the rounded rating and macro-F1 over the
rounded labels (`trainer.protocol.metrics.rounded_rating`), as `rating_summary` defines them.
Paired differences (what a term adds) are bootstrapped the same way, on the same resamples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.protocol.metrics import percentile_interval, rounded_rating

LABELS = 5


class UserBootstrap:
    """Resample weights of the users of a set of test ratings (users given per rating)."""

    def __init__(self, users: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> None:
        _, self.group = np.unique(users, return_inverse=True)
        n_users = int(self.group.max()) + 1 if len(users) else 0
        draws = np.random.default_rng(seed).integers(0, n_users, size=(n_resamples, n_users))
        self.weights = np.stack([np.bincount(d, minlength=n_users) for d in draws]).astype(np.float64)
        self.counts = np.bincount(self.group, minlength=n_users).astype(np.float64)

    def per_user(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.group, weights=values, minlength=len(self.counts))

    def means(self, values: np.ndarray) -> np.ndarray:
        """The mean of per-rating `values` in every resample."""
        return (self.weights @ self.per_user(values)) / (self.weights @ self.counts)


def f1_of_confusion(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion matrices (..., true, predicted) over the labels present in true or predicted."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(axis=-1) + confusion.sum(axis=-2)
    present = support > 0
    f1 = np.where(present, 2 * tp / np.maximum(support, 1e-12), 0.0)
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def summary(predicted: np.ndarray, true: np.ndarray, boot: UserBootstrap) -> dict[str, dict]:
    """{"MAE", "RMSE", "accuracy", "macro_F1"} each {"mean", "ci95"} with intervals over users."""
    error = np.asarray(predicted, dtype=np.float64) - true
    rounded, labels = rounded_rating(predicted), np.asarray(true).astype(np.int64)
    exact = (rounded == labels) * 1.0
    cell = (labels - 1) * LABELS + (rounded - 1)
    per_user = np.zeros((len(boot.counts), LABELS * LABELS))
    np.add.at(per_user, (boot.group, cell), 1.0)
    confusion = (boot.weights @ per_user).reshape(-1, LABELS, LABELS)
    whole = per_user.sum(axis=0).reshape(LABELS, LABELS)
    return {
        "MAE": {"mean": float(np.abs(error).mean()), "ci95": percentile_interval(boot.means(np.abs(error)))},
        "RMSE": {"mean": float(np.sqrt((error**2).mean())),
                 "ci95": percentile_interval(np.sqrt(boot.means(error**2)))},
        "accuracy": {"mean": float(exact.mean()), "ci95": percentile_interval(boot.means(exact))},
        "macro_F1": {"mean": float(f1_of_confusion(whole)), "ci95": percentile_interval(f1_of_confusion(confusion))},
    }


def rmse_gain(before: np.ndarray, after: np.ndarray, true: np.ndarray, boot: UserBootstrap) -> dict:
    """RMSE(before) - RMSE(after) on the same ratings (positive: `after` is better), interval over users."""
    sq_before, sq_after = (before - true) ** 2, (after - true) ** 2
    gains = np.sqrt(boot.means(sq_before)) - np.sqrt(boot.means(sq_after))
    return {"mean": float(np.sqrt(sq_before.mean()) - np.sqrt(sq_after.mean())), "ci95": percentile_interval(gains)}


def _cell(metric: dict, digits: int = 4) -> str:
    low, high = metric["ci95"]
    return f"{metric['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _table(rows: list[dict]) -> list[str]:
    lines = ["| row | ratings | users | RMSE | MAE | accuracy | macro-F1 | note |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["metrics"]
        lines.append(f"| {row['name']} | {row['ratings']} | {row['users']} | {_cell(m['RMSE'])} | {_cell(m['MAE'])} | "
                     f"{_cell(m['accuracy'])} | {_cell(m['macro_F1'])} | {row.get('note', '')} |")
    return lines


def _gains(gains: list[dict]) -> list[str]:
    lines = ["| term | on | from | to | RMSE gain [95% CI] |", "|---|---|---|---|---|"]
    lines += [f"| {g['term']} | {g['on']} | {g['from']} | {g['to']} | {_cell(g['gain'])} |" for g in gains]
    return lines


def render_markdown(report: dict) -> str:
    lines = [f"# {report['title']}", "", *[f"- **{k}**: {v}" for k, v in report["header"].items()], ""]
    lines += [f"## {report.get('rows_heading', 'Every row on the whole test part')}", "", report["intervals"], "",
              *_table(report["rows"]), ""]
    if report.get("gains"):
        lines += ["## What each term adds", "", "RMSE of the row without the term minus RMSE with it, on the same "
                  "ratings (positive = the term helps), interval over users.", "", *_gains(report["gains"]), ""]
    if report.get("sample_rows"):
        lines += [f"## The language model's head, on a seeded sample ({report['sample']})", "",
                  *_table(report["sample_rows"]), ""]
    if report.get("reasoning"):
        lines += ["## The grounded reasoning", "", *[f"- {line}" for line in report["reasoning"]], ""]
    lines += ["## Notes", "", *[f"- {note}" for note in report.get("notes", [])], ""]
    return "\n".join(lines)


def write_rating_report(report: dict, out_dir: Path, stem: str) -> list[Path]:
    """`<stem>.json` and `<stem>.md` (rendered from the same dict, so they agree)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(report), encoding="utf-8")
    return paths
