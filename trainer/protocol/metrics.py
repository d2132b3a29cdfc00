"""Evaluation metrics shared by every ranker and every job (docs/design.md section 6): ranks of targets under full
ranking, Hit@K, NDCG@K, Recall@K and MRR per query, rating errors, and percentile bootstrap intervals.

Conventions (the usual top-K definitions with binary relevance, as trec_eval computes them):
- a query's ranking is over every candidate item; excluded items (the history) are no candidates, so a ranker
  marks them -inf and they can never outrank a target; a target the ranker cannot score (-inf, e.g. an item
  SASRec never saw) is a miss: rank infinity, every metric 0;
- equal scores are broken by candidate order (the lower column first), the order a stable sort by descending
  score gives and the order written to TREC run files;
- Hit@K = 1 if any relevant item is in the top K; Recall@K = relevant items in the top K / relevant items;
  NDCG@K = sum over relevant items in the top K of 1/log2(rank + 1), divided by the same sum for an ideal
  ranking of min(#relevant, K) items; MRR = 1 / rank of the first relevant item over the whole ranking.
With one target per query (every protocol here), Hit@K = Recall@K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS: tuple[int, ...] = (5, 10, 20)


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of `targets[i]` (a column of `scores`, or -1 for "not a candidate") in row i of `scores`
    (queries x candidates, -inf = excluded/unscorable), ties broken by column; float, inf for a miss."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    rows = np.arange(len(targets))
    target_scores = scores[rows, np.maximum(targets, 0)]
    above = (scores > target_scores[:, None]).sum(axis=1)
    columns = np.arange(scores.shape[1])[None, :]
    tied_before = ((scores == target_scores[:, None]) & (columns < targets[:, None])).sum(axis=1)
    ranks = (1 + above + tied_before).astype(np.float64)
    ranks[(targets < 0) | ~np.isfinite(target_scores)] = np.inf
    return ranks


def ranking_metrics(relevant_ranks: Sequence[Sequence[float]] | np.ndarray, ks: Sequence[int] = KS
                    ) -> dict[str, np.ndarray]:
    """Per-query metric vectors {"HR@5", "NDCG@5", "Recall@5", ..., "MRR"} from the ranks of each query's
    relevant items (one list per query, inf = not retrieved; a 1-D array means one relevant item each)."""
    ranks = _rank_matrix(relevant_ranks)
    n_relevant = (~np.isnan(ranks)).sum(axis=1)
    if np.any(n_relevant < 1):
        raise ValueError("every query needs at least one relevant item")
    finite = np.isfinite(ranks)
    gains = np.where(finite, 1.0 / np.log2(np.where(finite, ranks, 1.0) + 1.0), 0.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        in_top = finite & (np.where(finite, ranks, np.inf) <= k)
        ideal = np.array([_ideal_dcg(min(int(n), k)) for n in n_relevant])
        out[f"HR@{k}"] = in_top.any(axis=1).astype(np.float64)
        out[f"NDCG@{k}"] = (gains * in_top).sum(axis=1) / ideal
        out[f"Recall@{k}"] = in_top.sum(axis=1) / n_relevant
    out["MRR"] = 1.0 / np.nanmin(ranks, axis=1)
    return out


def _rank_matrix(relevant_ranks: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Queries x relevant items, ragged rows padded with NaN (padding is not a relevant item)."""
    if isinstance(relevant_ranks, np.ndarray):
        matrix = relevant_ranks.astype(np.float64)
        return matrix[:, None] if matrix.ndim == 1 else matrix
    rows = [np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in relevant_ranks]
    matrix = np.full((len(rows), max(map(len, rows), default=0)), np.nan)
    for i, row in enumerate(rows):
        matrix[i, : len(row)] = row
    return matrix


def _ideal_dcg(n: int) -> float:
    return float(np.sum(1.0 / np.log2(np.arange(2, n + 2))))


def mean_metrics(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_query.items()}


def resamples(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of `n` queries: (n_resamples, n) indices drawn with replacement, seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ci(per_query: dict[str, np.ndarray], n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric's mean: queries are resampled with replacement (the same
    resamples for every metric), `n_resamples` times, seeded."""
    n = len(next(iter(per_query.values())))
    if n == 0:
        return {name: (float("nan"), float("nan")) for name in per_query}
    picks = resamples(n, n_resamples, seed)
    return {name: percentile_interval(values[picks].mean(axis=1), level) for name, values in per_query.items()}


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap `samples`."""
    alpha = (1 - level) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def rounded_rating(predicted: np.ndarray) -> np.ndarray:
    """Predictions rounded half up and clipped to 1..5."""
    return np.clip(np.floor(np.asarray(predicted, dtype=np.float64) + 0.5), 1, 5).astype(np.int64)


def rating_summary(predicted: np.ndarray, true: np.ndarray, n_resamples: int = 1000, seed: int = 0
                   ) -> dict[str, dict[str, float | tuple[float, float]]]:
    """MAE, RMSE, accuracy and macro-F1 of rounded ratings, each {"mean": value, "ci95": bootstrap interval}
    (queries resampled with replacement, the same resamples for all four)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if len(true) == 0:
        raise ValueError("rating_summary needs at least one prediction")
    rounded, labels = rounded_rating(predicted), true.astype(np.int64)
    abs_error, sq_error, exact = np.abs(predicted - true), (predicted - true) ** 2, (rounded == labels) * 1.0
    picks = resamples(len(true), n_resamples, seed)
    f1s = np.array([macro_f1(rounded[p], labels[p]) for p in picks])
    return {
        "MAE": {"mean": float(abs_error.mean()), "ci95": percentile_interval(abs_error[picks].mean(axis=1))},
        "RMSE": {"mean": float(np.sqrt(sq_error.mean())),
                 "ci95": percentile_interval(np.sqrt(sq_error[picks].mean(axis=1)))},
        "accuracy": {"mean": float(exact.mean()), "ci95": percentile_interval(exact[picks].mean(axis=1))},
        "macro_F1": {"mean": macro_f1(rounded, labels), "ci95": percentile_interval(f1s)},
    }


def macro_f1(predicted: np.ndarray, true: np.ndarray) -> float:
    """Unweighted mean F1 over the labels present in `true` or `predicted` (sklearn's default labels)."""
    scores = []
    for label in sorted(set(true.tolist()) | set(predicted.tolist())):
        tp = float(np.sum((predicted == label) & (true == label)))
        fp = float(np.sum((predicted == label) & (true != label)))
        fn = float(np.sum((predicted != label) & (true == label)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else float("nan")
