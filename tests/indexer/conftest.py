"""Shared fixtures for the indexer tests: seeded random vectors, items and a model fingerprint."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from indexer.core.catalog import Catalog, Item
from indexer.core.fingerprint import ModelFingerprint

DIM = 32


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def fingerprint() -> ModelFingerprint:
    return ModelFingerprint("tiny-llama", weights_hash="w1a2b3", adapter_hash=None, template_version="t1")


def _make_items(n: int, start: int = 0) -> list[Item]:
    return [Item(f"item{i}", f"Title {i}", genres=("Drama",), year=1990 + i % 30) for i in range(start, start + n)]


@pytest.fixture
def make_items() -> Callable[..., list[Item]]:
    """make_items(n, start=0): items "item{start}".."item{start+n-1}"."""
    return _make_items


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.of(_make_items(200))


@pytest.fixture
def vectors(rng: np.random.Generator) -> np.ndarray:
    # an anisotropic cloud like LLM item vectors: a large shared offset plus small item-specific parts
    return (3.0 + rng.standard_normal((200, DIM))).astype(np.float32)
