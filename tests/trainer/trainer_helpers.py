"""Data builders shared by the trainer tests: small datasets in the official ml-1m.zip layout; a stand-in for
MiniLM."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


class HashEncoder:
    """A stand-in for MiniLM: a seeded unit vector per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
