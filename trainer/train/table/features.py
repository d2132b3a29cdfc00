"""The item table's inputs and its in-memory index: content features of items (the language model's item states
and MiniLM text vectors, cached on disk) and an `ItemStore` of the table's rows, as `reasonrec index` builds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from indexer.core.catalog import Catalog
from indexer.core.fingerprint import ModelFingerprint
from indexer.store import ItemStore
from model.engines.base import Engine
from model.networks.item_features import FeatureSpec, combine
from model.networks.minilm import MiniLMEncoder, item_text
from model.networks.table_artifact import TableArtifact
from model.prompts import TEMPLATE_VERSION
from trainer.batch_cache import BatchCache, item_state_cache, item_states


def item_features(items: list, spec: FeatureSpec, engine: Engine | None, cache: Path
                  ) -> tuple[np.ndarray | None, np.ndarray]:
    """(center of the LLM item states or None, content features (n, width)) of `items`, cached per batch."""
    llm, center = None, None
    if spec.llm:
        assert engine is not None
        llm = item_states(items, engine, item_state_cache(cache, engine))
        center = llm.mean(axis=0).astype(np.float32)
    text = None
    if spec.minilm:
        texts = [item_text(i) for i in items]
        text = BatchCache(cache / "minilm-items", {"minilm": "all-MiniLM-L6-v2"}).get_or_compute(
            texts, lambda batch: MiniLMEncoder().encode(batch))
    return center, combine(spec, llm, text, center)


def table_store(artifact: TableArtifact, features: torch.Tensor, catalog: Catalog) -> ItemStore:
    """An in-memory item index of the table's rows, as `reasonrec index` builds it for serving."""
    with torch.inference_mode():
        rows = artifact.model.table(features)[1:].numpy()
    return ItemStore.create(Catalog({i: catalog[i] for i in artifact.item_ids}), rows, table_fingerprint(artifact),
                            table=artifact.table_hash or "training")


def table_fingerprint(artifact: TableArtifact) -> ModelFingerprint:
    """What a table index's manifest names as its model: the language model of the features, or MiniLM alone."""
    return artifact.fingerprint or ModelFingerprint("all-MiniLM-L6-v2", "minilm", None, TEMPLATE_VERSION)
