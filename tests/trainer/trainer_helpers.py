"""Data builders shared by the trainer tests: small datasets in the official ml-1m.zip layout."""

from __future__ import annotations

import random
from pathlib import Path

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]
N_MOVIES = 30


def write_cycle_ml1m(root: Path, n_users: int = 40) -> Path:
    """movies.dat/ratings.dat where each user watches consecutive movie ids (a learnable pattern)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    movies = [f"{i}::Film number {i} ({1970 + i})::{GENRES[i % 5]}|{GENRES[(i * 2) % 5]}"
              for i in range(1, N_MOVIES + 1)]
    ratings = []
    for user in range(1, n_users + 1):
        start = rng.randrange(N_MOVIES)
        for t in range(rng.randrange(6, 12)):
            ratings.append(f"{user}::{(start + t) % N_MOVIES + 1}::{rng.randint(1, 5)}::{978300000 + 100 * t}")
    (root / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    (root / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    return root
