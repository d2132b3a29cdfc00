"""Metric correctness against an independent implementation (pytrec_eval, i.e. trec_eval): random runs
without ties, agreement to 1e-6 for Hit@K, Recall@K, NDCG@K (K = 5, 10, 20) and MRR; once on the metric
functions with several relevant items per query, once through the whole harness (history exclusion, ranks,
top-N kept) and the TREC files it writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from trainer.data.datasets import Interaction
from trainer.data.splits import Example
from trainer.evaluation.report import write_trec
from trainer.protocol.harness import rank_examples
from trainer.protocol.metrics import KS, ranking_metrics, target_ranks

pytrec_eval = pytest.importorskip("pytrec_eval")

OURS_TO_TREC = {**{f"HR@{k}": f"success_{k}" for k in KS}, **{f"Recall@{k}": f"recall_{k}" for k in KS},
                **{f"NDCG@{k}": f"ndcg_cut_{k}" for k in KS}, "MRR": "recip_rank"}
MEASURES = {"success." + ",".join(map(str, KS)), "recall." + ",".join(map(str, KS)),
            "ndcg_cut." + ",".join(map(str, KS)), "recip_rank"}


def trec_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, np.ndarray]:
    """pytrec_eval's per-query values in the order of `qrels`, under our metric names."""
    evaluated = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    return {ours: np.array([evaluated[q][theirs] for q in qrels]) for ours, theirs in OURS_TO_TREC.items()}


def assert_agree(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    for name in OURS_TO_TREC:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("max_relevant", [1, 4])
def test_ranking_metrics_agree_with_trec_eval(max_relevant: int) -> None:
    rng = np.random.default_rng(max_relevant)
    n_queries, n_docs = 200, 60
    scores = rng.permutation(n_queries * n_docs).reshape(n_queries, n_docs) / (n_queries * n_docs)  # no ties
    relevant = [rng.choice(n_docs, size=rng.integers(1, max_relevant + 1), replace=False) for _ in range(n_queries)]
    ranks = [target_ranks(np.repeat(scores[q : q + 1], len(r), axis=0), r) for q, r in enumerate(relevant)]
    run = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in range(n_docs)} for q in range(n_queries)}
    qrels = {f"q{q}": {f"d{d}": 1 for d in r} for q, r in enumerate(relevant)}
    assert_agree(ranking_metrics(ranks), trec_metrics(run, qrels))


class RandomRanker:
    """Continuous random scores (no ties), fixed per (user, item) so they can be recomputed."""

    name = "random"
    batch_size = 7

    def __init__(self, candidates: Sequence[str], seed: int = 0) -> None:
        self.n = len(candidates)
        self.seed = seed

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        return np.stack([np.random.default_rng([self.seed, int(e.user_id)]).random(self.n) for e in examples])


def _examples(n_users: int, candidates: list[str], rng: np.random.Generator) -> list[Example]:
    out = []
    for user in range(n_users):
        picked = rng.choice(len(candidates), size=int(rng.integers(2, 12)), replace=False)
        items = [Interaction(str(user), candidates[i], 4.0, t) for t, i in enumerate(picked)]
        out.append(Example(str(user), items[:-1], items[-1]))
    return out


def test_harness_and_trec_files_agree_with_trec_eval(tmp_path: Path) -> None:
    candidates = [f"Movie {i} (19{i % 100:02d})" for i in range(150)]  # ids with spaces, as in ML-1M
    examples = _examples(120, candidates, np.random.default_rng(1))
    ranker = RandomRanker(candidates)
    result = rank_examples(ranker, examples, candidates, keep_top=len(candidates))
    # the oracle's run: the same scores with each user's history removed
    run = {}
    for example, row in zip(examples, ranker.scores(examples), strict=False):
        history = {x.item_id for x in example.history}
        run[example.user_id] = {item: float(s) for item, s in zip(candidates, row, strict=False) if item not in history}
    qrels = {e.user_id: {e.target.item_id: 1} for e in examples}
    assert_agree(result.per_query(), trec_metrics(run, qrels))
    # and the TREC files the job exports, read back as trec_eval would read them
    write_trec(result, tmp_path / "r.run", tmp_path / "r.qrels")
    file_run: dict[str, dict[str, float]] = {}
    for line in (tmp_path / "r.run").read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert (q0, tag) == ("Q0", "random")
        file_run.setdefault(qid, {})[doc] = float(score)
    file_qrels: dict[str, dict[str, int]] = {}
    for line in (tmp_path / "r.qrels").read_text().splitlines():
        qid, _, doc, rel = line.split()
        file_qrels.setdefault(qid, {})[doc] = int(rel)
    assert_agree(result.per_query(), trec_metrics(file_run, file_qrels))


def test_excluded_and_unscorable_targets() -> None:
    scores = np.array([[0.9, 0.1, -np.inf, 0.5], [0.9, 0.1, 0.3, 0.5]])
    assert target_ranks(scores, np.array([2, 2])).tolist() == [np.inf, 3.0]  # -inf target = miss
    assert target_ranks(scores, np.array([-1, 0])).tolist() == [np.inf, 1.0]  # not a candidate = miss
    tied = np.array([[0.5, 0.5, 0.5]])
    assert target_ranks(tied, np.array([1])).tolist() == [2.0]  # ties by candidate order
    metrics = ranking_metrics(np.array([np.inf, 1.0]))
    assert metrics["MRR"].tolist() == [0.0, 1.0] and metrics["NDCG@5"].tolist() == [0.0, 1.0]
