"""Cold-item vectors from content neighbors: a cold item takes the mean of the stored LLM vectors of the N known
items most similar to it in content (all-MiniLM-L6-v2 cosine over title, year, genres and description; never
ratings), instead of the LLM's vector of its own prompt.

Why: on content alone SmolLM2's item vectors, base or trained, rank cold items at chance, while MiniLM finds
similar films (`docs/training-cl.md`, "Cold items"). Borrowing the neighbors' vectors places a new item where the
model put items like it, with the collaborative signal training gave them. It is the non-parametric form of the
content-to-embedding mapping that DropoutNet learns (Volkovs et al., NeurIPS 2017): k-nearest-neighbor imputation
of a missing item embedding from item features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.catalog import Item
from indexer.store import ItemStore
from trainer.content import TextEncoder, item_text


def neighbor_means(new_content: np.ndarray, known_content: np.ndarray, known_vectors: np.ndarray,
                    neighbors: int) -> np.ndarray:
    """For each row of `new_content` (unit vectors), the mean of the `known_vectors` rows of its `neighbors`
    most cosine-similar rows of `known_content`."""
    if not 1 <= neighbors <= len(known_content):
        raise ValueError(f"neighbors must be in [1, {len(known_content)}] (the known items), got {neighbors}")
    similarity = new_content @ known_content.T
    nearest = np.argpartition(-similarity, neighbors - 1, axis=1)[:, :neighbors]
    return known_vectors[nearest].mean(axis=1)


def impute_cold_vectors(store: ItemStore, cold: Sequence[Item], known: Sequence[Item], encoder: TextEncoder,
                        neighbors: int) -> None:
    """Upsert each `cold` item into `store` with the mean vector of its `neighbors` nearest `known` items (which
    must be in the store) by `encoder`'s cosine of their content text."""
    if not cold:
        return
    content = np.asarray(encoder.encode([item_text(item) for item in [*cold, *known]]), dtype=np.float32)
    stored = store.vectors_of([item.item_id for item in known])  # centered (if the index is) and normalized
    means = neighbor_means(content[: len(cold)], content[len(cold) :], stored, neighbors)
    # the store centers what it is given: adding the center back stores the direction of the centered mean
    store.add_items(list(cold), means if store.center is None else means + store.center, upsert=True)
