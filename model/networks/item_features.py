"""Content features of items, the input of the item table's content map g (`model.networks.item_table`; docs/design.md
section 2): what an item's text alone says about it, so that an item nobody has taken yet can be placed.

Two parts, each optional (the table's manifest records which):
- the language model's item state: [user: item prompt][assistant: `<answer>`] -> final hidden state, minus a
  stored center (the mean over the training catalog: the raw states are strongly anisotropic), L2-normalized;
- the MiniLM text vector of the item's text (`model.networks.minilm`), already L2-normalized.
A title outside the catalog is featurized as an item with that title only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.core.catalog import Item
from model.engines.base import Engine
from model.networks.minilm import TextEncoder, item_text
from model.prompts import item_prompt


@dataclass(frozen=True)
class FeatureSpec:
    """Which content features the table's g reads."""

    llm: bool = True
    """The language model's item state."""
    minilm: bool = True
    """The MiniLM text vector."""

    def __post_init__(self) -> None:
        if not (self.llm or self.minilm):
            raise ValueError("the content features need the language model's state, MiniLM, or both")

    def describe(self) -> str:
        return " + ".join(name for name, on in (("LLM item state", self.llm), ("MiniLM text", self.minilm)) if on)


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def combine(spec: FeatureSpec, llm_states: np.ndarray | None, text_vectors: np.ndarray | None,
            center: np.ndarray | None) -> np.ndarray:
    """The feature rows (n, width) from raw LLM item states (n, hidden) and MiniLM vectors (n, 384)."""
    parts = []
    if spec.llm:
        assert llm_states is not None and center is not None, "the LLM part needs states and their center"
        parts.append(unit_rows(np.asarray(llm_states, dtype=np.float32) - center))
    if spec.minilm:
        assert text_vectors is not None, "the MiniLM part needs text vectors"
        parts.append(np.asarray(text_vectors, dtype=np.float32))
    return np.concatenate(parts, axis=1)


class ContentFeaturizer:
    """Features of items on demand (hot-added items, titles outside the catalog), as the trainer made them."""

    def __init__(self, spec: FeatureSpec, engine: Engine | None, text_encoder: TextEncoder | None,
                 center: np.ndarray | None) -> None:
        if spec.llm and (engine is None or center is None):
            raise ValueError("the LLM part of the content features needs the engine and the stored center")
        if spec.minilm and text_encoder is None:
            raise ValueError("the MiniLM part of the content features needs the MiniLM encoder")
        self.spec, self.engine, self.text_encoder, self.center = spec, engine, text_encoder, center

    def features(self, items: Sequence[Item]) -> np.ndarray:
        llm = self.engine.embed_items([item_prompt(i) for i in items]) if self.spec.llm and self.engine else None
        text = self.text_encoder.encode([item_text(i) for i in items]) if self.spec.minilm and self.text_encoder \
            else None
        return combine(self.spec, llm, text, self.center)

    def of_titles(self, titles: Sequence[str]) -> np.ndarray:
        """Features of history entries given by title only."""
        return self.features([Item(f"title:{title}", title) for title in titles])
