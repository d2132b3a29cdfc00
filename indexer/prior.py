"""The popularity prior: item score = cosine + weight x log(1 + the item's interaction count), searched exactly.

A cosine between a user vector and an item vector has no term for how popular the item is, and the language
model's vectors leave popular items far from most users (ML-1M: the base model's top-10 items have a median
popularity rank of ~1,660 of 3,883, the users' next items ~480). Adding a log-count prior is the item bias of a
factorization model, and it is what a two-tower model trained with in-batch negatives and no logQ correction
leaves out: such a model learns log p(item | user) - log p(item) (Yi et al., "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations", RecSys 2019), so the prior puts the popularity back at serving
time. The weight is chosen on validation users (`reasonrec train-cl` reports the best of a small grid).

The index searches by cosine, so `rerank_with_prior` fetches the top candidates by cosine and rescores them,
fetching more until the result is provably the exact top k of the combined score: an item not fetched has a
cosine at most the last fetched one's, hence a combined score at most that plus weight x the largest prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from indexer.index import SearchResult

PRIOR_WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The weights a validation run tries (`reasonrec train-cl`, `reasonrec experiment tune-prior`), best reported."""
FIRST_FETCH = 4
"""The first search fetches this many times k items by cosine; each retry fetches 4 times more."""


def log_count_prior(counts: Mapping[str, int], weight: float) -> dict[str, float]:
    """weight x log(1 + count) per item id; an error for a negative weight or count."""
    if weight < 0 or not math.isfinite(weight):
        raise ValueError(f"popularity prior weight must be a finite number >= 0, got {weight}")
    negative = [item_id for item_id, count in counts.items() if count < 0]
    if negative:
        raise ValueError(f"interaction counts must be >= 0, got negative counts for {negative[:5]}")
    return {item_id: weight * math.log1p(count) for item_id, count in counts.items()}


def rerank_with_prior(search: Callable[[int], list[SearchResult]], prior: Mapping[str, float], k: int,
                      total: int) -> list[SearchResult]:
    """Exact top-k (item id, cosine + prior) per query, best first. `search(n)` returns each query's top n by
    cosine (fewer when fewer items are left after exclusions); `total` is the number of indexed items; items
    missing from `prior` get 0."""
    largest = max(prior.values(), default=0.0)
    fetch = min(FIRST_FETCH * k, total)
    while True:
        rows = search(fetch)
        results, exact = [], True
        for row in rows:
            rescored = sorted(((item_id, cosine + prior.get(item_id, 0.0)) for item_id, cosine in row),
                              key=lambda pair: -pair[1])[:k]
            complete = len(row) < fetch or fetch >= total
            if not complete and len(rescored) == k:
                complete = rescored[-1][1] >= row[-1][1] + largest
            exact = exact and complete
            results.append(rescored)
        if exact:
            return results
        fetch = min(4 * fetch, total)
