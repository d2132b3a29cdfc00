"""The fast engine against its parity reference, the transformers engine, on the tiny model: the lean forward
equals the HF forward at every position wherever a sequence is split between calls; the engine's reasoning has
the reference's greedy text and states (fp32, and fp16 decode weights), its vectors, rating probabilities and
generations too; a reasoning adapter becomes a second weight set that shares every untouched tensor and reasons
as the merged model does, while item and `direct` vectors stay the base model's."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from model.engines.fast_engine import REASONING, FastEngine, load_fast_engine
from model.engines.lean import BASE, EXACT, FAST, FP32, LeanLlama, Precision, peft_lora_deltas
from model.engines.loading import load_model
from model.engines.tiny import tiny_llama, tiny_tokenizer
from model.engines.transformers_engine import load_engine
from model.prompts import ANSWER_MARKER, USER_INSTRUCTION, render_chat

PROMPTS = [USER_INSTRUCTION + f"2000-0{i + 1} (5) [Toy Story (1995)] Drama, Thriller " * (1 + i % 3)
           for i in range(4)]
ITEMS = ["Title: Toy Story (1995)\nGenres: Animation", "Title: Heat (1995)\nGenres: Action, Crime"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _biased_llama() -> LlamaForCausalLM:
    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("make", [tiny_llama, _biased_llama])
def test_the_lean_forward_equals_hf_at_every_position_split_anywhere(make) -> None:
    model = make()
    lean = LeanLlama(model, FP32, capacity=16)  # a small capacity: the cache grows on the way
    ids = torch.randint(3, model.config.vocab_size, (40,))
    with torch.inference_mode():
        ref = model.model(input_ids=ids[None]).last_hidden_state[0]
        for split in (0, 1, 17, 39):
            if split:
                lean.forward(ids[:split], 0)
            torch.testing.assert_close(lean.forward(ids[split:], split), ref[-1], atol=1e-5, rtol=1e-4)
        lean.forward(ids[:20], 0)
        for i in range(20, 40):  # one token at a time, as a decode does
            torch.testing.assert_close(lean.forward(ids[i : i + 1], i), ref[i], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", [FP32, EXACT, FAST])
def test_the_engine_reasons_and_embeds_as_the_reference(precision: Precision) -> None:
    reference, fast = load_engine("tiny"), FastEngine(load_model("tiny"), precision)
    floor = 0.99999 if precision == FP32 else 0.999
    for ours, theirs in zip(fast.reason(PROMPTS, 12), reference.reason(PROMPTS, 12), strict=True):
        assert (ours.text, ours.generated_tokens, ours.wrote_marker) == \
            (theirs.text, theirs.generated_tokens, theirs.wrote_marker)
        assert _cos(ours.vector, theirs.vector) > floor
    for ours, theirs in zip(fast.embed_direct(PROMPTS), reference.embed_direct(PROMPTS), strict=True):
        assert _cos(ours, theirs) > floor
    for ours, theirs in zip(fast.embed_items(ITEMS), reference.embed_items(ITEMS), strict=True):
        assert _cos(ours, theirs) > floor
    np.testing.assert_allclose(fast.choice_probs(PROMPTS, ["<rate>"] * 4, list("12345")),
                               reference.choice_probs(PROMPTS, ["<rate>"] * 4, list("12345")), atol=2e-3)
    assert [g.text for g in fast.generate(PROMPTS, ["<analyze user>"] * 4, 8, "</analyze user>")] == \
        [g.text for g in reference.generate(PROMPTS, ["<analyze user>"] * 4, 8, "</analyze user>")]


def test_a_lora_set_shares_untouched_tensors_and_reasons_as_the_merged_model() -> None:
    base = tiny_llama(num_layers=3)
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "down_proj"], layers_to_transform=[2]))
    lean = LeanLlama(base, FP32)
    lean.add_lora("adapter", peft_lora_deltas(peft_model))
    sets = lean.sets
    assert sets[BASE].layers[0] is sets["adapter"].layers[0] and sets[BASE].layers[1] is sets["adapter"].layers[1]
    assert sets[BASE].layers[2] is not sets["adapter"].layers[2]
    assert sets[BASE].layers[2].o is sets["adapter"].layers[2].o  # an untouched projection of a touched layer
    merged = peft_model.merge_and_unload().eval()
    ids = torch.randint(3, base.config.vocab_size, (12,))
    with torch.inference_mode():
        torch.testing.assert_close(lean.forward(ids, 0, "adapter"), merged.model(input_ids=ids[None])
                                   .last_hidden_state[0, -1], atol=1e-5, rtol=1e-4)


def test_a_held_reasoning_adapter_reasons_as_merged_and_embeds_as_base(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(load_model("tiny").model, config).save_pretrained(tmp_path)
    fast = load_fast_engine("tiny", reasoning_adapter=tmp_path)
    merged, base = load_engine("tiny", tmp_path), load_engine("tiny")
    assert REASONING in fast.lean.sets and fast.reasoning_adapter == load_model(
        "tiny", reasoning_adapter=tmp_path).reasoning_adapter
    for ours, theirs in zip(fast.reason(PROMPTS, 10), merged.reason(PROMPTS, 10), strict=True):
        assert ours.text == theirs.text and _cos(ours.vector, theirs.vector) > 0.99999
    for ours, theirs in zip(fast.embed_items(ITEMS), base.embed_items(ITEMS), strict=True):
        assert _cos(ours, theirs) > 0.99999
    assert fast.generate([PROMPTS[0]], [""], 6, ANSWER_MARKER)[0].text == \
        base.generate([PROMPTS[0]], [""], 6, ANSWER_MARKER)[0].text


def test_a_prompt_that_shares_the_held_sequence_feeds_only_its_tail(tmp_path: Path) -> None:
    """The cache's last sequence is reused exactly: the same probabilities and states as a fresh engine, only the
    new tail is fed, and never across weight sets."""
    history = USER_INSTRUCTION + "2000-01 (5) [Toy Story (1995)] Animation, Comedy\n" * 6
    prompts = [history + f"Which? A: {a} B: {b}" for a, b in (("Heat", "Fargo"), ("Fargo", "Heat"), ("Big", "Heat"))]
    fast = FastEngine(load_model("tiny"))
    fed: list[int] = []
    forward = fast.lean.forward

    def counting(ids, start, weights=BASE):  # noqa: ANN001, ANN202
        fed.append(len(ids))
        return forward(ids, start, weights)

    fast.lean.forward = counting  # type: ignore[method-assign]
    shared = fast.choice_probs(prompts, [""] * 3, ["A", "B"])
    fresh = np.vstack([FastEngine(load_model("tiny")).choice_probs([p], [""], ["A", "B"]) for p in prompts])
    np.testing.assert_allclose(shared, fresh, atol=1e-5)
    rendered = render_chat(fast.tokenizer, prompts[2])
    head = len(fast._ids(rendered.split("Which?")[0]))
    assert head > 40 and fed[-1] <= len(fast._ids(rendered)) - head + 2  # the history was not fed again

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    get_peft_model(load_model("tiny").model, config).save_pretrained(tmp_path)
    held = load_fast_engine("tiny", reasoning_adapter=tmp_path)
    held.reason([prompts[0]], 4)  # the adapter's KV of this prompt is in the cache now
    for ours, theirs in zip(held.embed_direct([prompts[0]]), load_engine("tiny").embed_direct([prompts[0]]),
                            strict=True):
        assert _cos(ours, theirs) > 0.99999
