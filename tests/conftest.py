"""Shared fixtures: the tiny model engine (fast tests) and the real SmolLM2 engine (slow tests)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_engine():
    from model.loading import load_model
    from model.transformers_engine import TransformersEngine

    return TransformersEngine(load_model("tiny"), batch_size=4)


@pytest.fixture(scope="session")
def real_engine():
    from model.loading import load_model
    from model.transformers_engine import TransformersEngine

    return TransformersEngine(load_model("smollm2"), batch_size=4)
