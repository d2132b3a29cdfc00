"""One engine, two weight sets: a reasoning adapter held beside the base weights is on for a reasoning (and the
state after it) and off for everything else, so item vectors, `direct` vectors and rating probabilities are the
base model's (the shipped table and index stay valid) while the reasoning is the adapter's, as if merged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from model.engines.batching import MicroBatchingEngine
from model.engines.loading import adapter_hash, load_model
from model.engines.transformers_engine import load_engine
from model.prompts import ANSWER_MARKER

USERS = ["Analyse the user's history: Toy Story (1995) 5", "history: Heat (1995) 3, Alien (1979) 4"]
ITEMS = ["Title: Toy Story (1995)\nGenres: Animation", "Title: Heat (1995)\nGenres: Action, Crime"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) weights on every projection."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(load_model("tiny").model, config)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def test_item_direct_and_rating_outputs_are_the_base_models(adapter):
    base, held = load_engine("tiny"), load_engine("tiny", reasoning_adapter=adapter)
    assert held.fingerprint == base.fingerprint and held.reasoning_adapter == adapter_hash(adapter)
    np.testing.assert_array_equal(held.embed_items(ITEMS), base.embed_items(ITEMS))
    np.testing.assert_array_equal(held.embed_direct(USERS), base.embed_direct(USERS))
    np.testing.assert_array_equal(held.choice_probs(USERS, ["<rate>"] * 2, list("12345")),
                                  base.choice_probs(USERS, ["<rate>"] * 2, list("12345")))
    assert [g.text for g in held.generate(USERS, [""] * 2, 6, ANSWER_MARKER)] == \
        [g.text for g in base.generate(USERS, [""] * 2, 6, ANSWER_MARKER)]


def test_the_reasoning_and_its_state_are_the_adapters(adapter):
    base, held, merged = (load_engine("tiny"), load_engine("tiny", reasoning_adapter=adapter),
                          load_engine("tiny", adapter))
    ours, theirs, plain = held.reason(USERS, 8), merged.reason(USERS, 8), base.reason(USERS, 8)
    assert [r.text for r in ours] == [r.text for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-4)
    assert any(a.text != p.text or not np.allclose(a.vector, p.vector, atol=1e-3)
               for a, p in zip(ours, plain, strict=True))
    np.testing.assert_array_equal(held.embed_items(ITEMS), base.embed_items(ITEMS))  # switched off again


@pytest.mark.parametrize("continuous", [True, False])
def test_the_batcher_keeps_the_two_apart(adapter, continuous):
    held, merged = load_engine("tiny", reasoning_adapter=adapter), load_engine("tiny", adapter)
    batcher = MicroBatchingEngine(held, continuous=continuous)
    try:
        assert batcher.reasoning_adapter == held.reasoning_adapter
        assert [r.text for r in batcher.reason(USERS, 8)] == [r.text for r in merged.reason(USERS, 8)]
        assert [g.text for g in batcher.generate(USERS, [""] * 2, 6, ANSWER_MARKER)] == \
            [g.text for g in load_engine("tiny").generate(USERS, [""] * 2, 6, ANSWER_MARKER)]
    finally:
        batcher.close()
