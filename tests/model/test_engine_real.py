"""The vector-parity checks on the real SmolLM2-135M-Instruct (slow: loads the converted model)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.core.catalog import Item
from model.prompts import ANSWER_MARKER, HistoryLine, item_prompt, user_prompt

pytestmark = pytest.mark.slow

HISTORIES = [
    [("Toy Story (1995)", 5), ("Aladdin (1992)", 4), ("Lion King, The (1994)", 5)],
    [("Heat (1995)", 4), ("Casino (1995)", 3), ("GoldenEye (1995)", 4), ("Fargo (1996)", 5)],
    [("Alien (1979)", 5)],
    [("Sense and Sensibility (1995)", 4), ("Persuasion (1995)", 5), ("Emma (1996)", 2), ("Clueless (1995)", 3)],
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return [user_prompt([HistoryLine(t, r) for t, r in h]) for h in HISTORIES]


@pytest.fixture(scope="module")
def batched(real_engine, prompts):
    return real_engine.reason(prompts, max_new_tokens=32)


def test_kv_cache_vector_equals_a_fresh_full_pass_over_the_retokenized_text(real_engine, prompts, batched):
    texts = [real_engine.render(p, r.text + ANSWER_MARKER) for p, r in zip(prompts, batched, strict=False)]
    full = real_engine._last_hidden(texts)
    for result, vector in zip(batched, full, strict=False):
        assert result.text, "the real model should write some reasoning"
        assert cosine(result.vector, vector) >= 0.999
    assert real_engine.stats["kv_shortcut"] >= 1


def test_batch_of_four_equals_four_single_calls(real_engine, prompts, batched):
    for prompt, result in zip(prompts, batched, strict=False):
        single = real_engine.reason([prompt], max_new_tokens=32)[0]
        assert single.text == result.text
        assert cosine(single.vector, result.vector) >= 0.999


def test_item_vectors_batch_equals_single_and_differ_between_items(real_engine):
    items = [Item("1", "Toy Story", ("Animation", "Comedy"), 1995), Item("2", "Heat", ("Crime", "Thriller"), 1995)]
    texts = [item_prompt(i) for i in items]
    batched = real_engine.embed_items(texts)
    assert batched.shape == (2, 576)
    for text, vector in zip(texts, batched, strict=False):
        assert cosine(real_engine.embed_items([text])[0], vector) >= 0.999
    assert cosine(batched[0], batched[1]) < 0.999
