"""The transformers engine on the tiny model: batching, the KV-cache vector and both of its branches."""

from __future__ import annotations

import numpy as np
import pytest

from model.engines.loading import load_model
from model.engines.tiny import script_tiny_llama
from model.engines.transformers_engine import TransformersEngine
from model.prompts import ANSWER_MARKER

PROMPTS = [
    "[Toy Story (1995)] (5)\n[Heat (1995)] (4)",
    "hi",
    "[Alien (1979)] (5)\n[Aliens (1986)] (4)\n[Big (1988)] (2) and a much longer line of history text here",
    "x",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def scripted_engine(script_text_tokens: list[str], end: str = "<|im_end|>") -> TransformersEngine:
    """A tiny engine whose greedy output after the generation prompt is the given token strings."""
    loaded = load_model("tiny")
    engine = TransformersEngine(loaded)
    tok = loaded.tokenizer
    start_id = engine._ids(engine.render("anything"))[-1]
    script_ids = [tok.convert_tokens_to_ids(t) for t in script_text_tokens]
    assert tok.unk_token_id not in script_ids, script_text_tokens
    script_tiny_llama(loaded.model, start_id, script_ids, tok.convert_tokens_to_ids(end))
    return engine


def full_pass_vector(engine: TransformersEngine, user_text: str, reasoning: str) -> np.ndarray:
    return engine._last_hidden([engine.render(user_text, reasoning + ANSWER_MARKER)])[0]


def test_render_matches_chat_template_continue_final_message(tiny_engine):
    expected = tiny_engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ANSWER_MARKER}],
        tokenize=False,
        continue_final_message=True,
    )
    assert tiny_engine.render("hello", ANSWER_MARKER) == expected
    assert expected.endswith("assistant\n" + ANSWER_MARKER)


def test_reason_batch_equals_single_calls(tiny_engine):
    batch = tiny_engine.reason(PROMPTS, max_new_tokens=12)
    for prompt, batched in zip(PROMPTS, batch, strict=False):
        single = tiny_engine.reason([prompt], max_new_tokens=12)[0]
        assert single.text == batched.text
        assert cosine(single.vector, batched.vector) > 0.9999
        assert batched.generated_tokens == 12 and not batched.wrote_marker


def test_reason_vector_is_the_vector_of_the_retokenized_text(tiny_engine):
    for prompt, result in zip(PROMPTS, tiny_engine.reason(PROMPTS, max_new_tokens=8), strict=False):
        assert cosine(result.vector, full_pass_vector(tiny_engine, prompt, result.text)) > 0.9999


def test_model_that_writes_the_marker_uses_the_kv_cache_shortcut():
    tok_strings = ["Ġuser", "Ġrating", "Ġhistory", "<", "answer", ">"]
    engine = scripted_engine(tok_strings)
    before = dict(engine.stats)
    [result] = engine.reason(["some history"], max_new_tokens=40)
    assert result.text == " user rating history"
    assert result.wrote_marker and result.generated_tokens == len(tok_strings)
    assert engine.stats["kv_shortcut"] == before["kv_shortcut"] + 1
    assert engine.stats["full_pass"] == before["full_pass"]
    assert cosine(result.vector, full_pass_vector(engine, "some history", result.text)) > 0.9999


def test_non_canonical_tokens_fall_back_to_a_full_pass():
    # "<answer>" spelled letter by letter: re-tokenizing the text gives different ids than those generated.
    spelled = ["Ġitem", "<", "a", "n", "s", "w", "e", "r", ">"]
    engine = scripted_engine(spelled)
    assert engine._ids("<answer>") != [engine.tokenizer.convert_tokens_to_ids(t) for t in spelled[1:]]
    before = dict(engine.stats)
    [result] = engine.reason(["some history"], max_new_tokens=40)
    assert result.text == " item" and result.wrote_marker
    assert engine.stats["full_pass"] == before["full_pass"] + 1
    assert cosine(result.vector, full_pass_vector(engine, "some history", result.text)) > 0.9999


def test_budget_end_appends_the_marker_and_feeds_it_on_the_cache():
    engine = scripted_engine(["Ġuser", "Ġrating", "Ġhistory", "<", "answer", ">"])
    before = dict(engine.stats)
    [result] = engine.reason(["some history"], max_new_tokens=2)
    assert result.text == " user rating" and not result.wrote_marker and result.generated_tokens == 2
    assert engine.stats["kv_shortcut"] == before["kv_shortcut"] + 1
    assert cosine(result.vector, full_pass_vector(engine, "some history", result.text)) > 0.9999


def test_end_of_turn_stops_generation_and_mixed_batches_agree():
    engine = scripted_engine(["Ġuser", "Ġrating", "Ġhistory"])
    results = engine.reason(["some history", "another one"], max_new_tokens=30)
    for prompt, result in zip(["some history", "another one"], results, strict=False):
        assert result.text == " user rating history" and result.generated_tokens == 3 and not result.wrote_marker
        assert cosine(result.vector, full_pass_vector(engine, prompt, result.text)) > 0.9999


def test_zero_budget_reasoning_is_the_direct_vector(tiny_engine):
    [result] = tiny_engine.reason(["hello"], max_new_tokens=0)
    assert result.text == "" and result.generated_tokens == 0
    assert cosine(result.vector, tiny_engine.embed_direct(["hello"])[0]) > 0.9999


def test_embeddings_batch_equals_single(tiny_engine):
    batched = tiny_engine.embed_items(PROMPTS)
    assert batched.shape == (len(PROMPTS), tiny_engine.hidden_size) and batched.dtype == np.float32
    for prompt, vector in zip(PROMPTS, batched, strict=False):
        assert cosine(tiny_engine.embed_items([prompt])[0], vector) > 0.9999
    assert not np.allclose(batched[0], batched[1])


def test_generate_stops_at_the_stop_string():
    engine = scripted_engine(["Ġuser", "</", "match", ">", "Ġhistory"])
    [out] = engine.generate(["u"], [""], max_new_tokens=20, stop="</match>")
    assert out.text == " user" and out.stopped and out.generated_tokens == 4


def test_choice_probs_are_a_distribution_and_reject_multi_token_choices(tiny_engine):
    probs = tiny_engine.choice_probs(["a", "b"], ["<rate>", "<rate>"], list("12345"))
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="single token"):
        tiny_engine.choice_probs(["a"], ["<rate>"], ["12345 and more"])
