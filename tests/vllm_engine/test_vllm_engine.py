"""The vLLM client against a stand-in server computing with the tiny model: same inputs, same outputs as the
transformers engine on that model (the protocol work: rendering, token ids, decoding, stop, vectors, logprobs)."""

from __future__ import annotations

import numpy as np
import pytest
from vllm_helpers import client_for

from model.engines.loading import load_model
from model.engines.replicas import ReplicaRequestError
from model.engines.tiny import script_tiny_llama
from model.engines.transformers_engine import TransformersEngine
from model.engines.vllm_engine import EMBED_CHUNK

PROMPTS = ["[Toy Story (1995)] (5)\n[Heat (1995)] (4)", "hi", "x"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture
def pair(standin, tiny_loaded):
    """(vLLM client over a stand-in, transformers engine), both on the same tiny model."""
    server = standin()
    return client_for(tiny_loaded, [server.url], [server.url]), TransformersEngine(tiny_loaded)


def scripted_pair(standin, tokens: list[str]):
    loaded = load_model("tiny")
    reference = TransformersEngine(loaded)
    tok = loaded.tokenizer
    start_id = reference._ids(reference.render("anything"))[-1]
    script_tiny_llama(loaded.model, start_id, [tok.convert_tokens_to_ids(t) for t in tokens], tok.eos_token_id)
    server = standin(loaded)
    return client_for(loaded, [server.url], [server.url]), reference


def test_reasoning_text_and_vectors_match_the_transformers_engine(pair):
    client, reference = pair
    for ours, theirs in zip(client.reason(PROMPTS, 6), reference.reason(PROMPTS, 6), strict=False):
        assert (ours.text, ours.generated_tokens, ours.wrote_marker) == (
            theirs.text, theirs.generated_tokens, theirs.wrote_marker)
        assert ours.vector.dtype == np.float32 and cosine(ours.vector, theirs.vector) > 0.9999
        np.testing.assert_allclose(np.linalg.norm(ours.vector), np.linalg.norm(theirs.vector), rtol=1e-4)


def test_direct_and_item_vectors_match(pair):
    client, reference = pair
    for ours, theirs in ((client.embed_direct(PROMPTS), reference.embed_direct(PROMPTS)),
                         (client.embed_items(PROMPTS), reference.embed_items(PROMPTS))):
        assert ours.shape == theirs.shape == (len(PROMPTS), reference.hidden_size)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_choice_probs_are_renormalized_exactly(pair):
    client, reference = pair
    ours = client.choice_probs(PROMPTS, ["<rate>"] * 3, list("12345"))
    np.testing.assert_allclose(ours, reference.choice_probs(PROMPTS, ["<rate>"] * 3, list("12345")), atol=1e-5)
    with pytest.raises(ValueError, match="single token"):
        client.choice_probs(["a"], ["<rate>"], ["12345 and more"])


def test_marker_written_by_the_model_stops_generation_like_the_transformers_engine(standin):
    client, reference = scripted_pair(standin, ["Ġuser", "Ġrating", "Ġhistory", "<", "answer", ">", "Ġmore"])
    [ours], [theirs] = client.reason(["some history"], 40), reference.reason(["some history"], 40)
    assert ours.text == theirs.text == " user rating history"
    assert ours.wrote_marker and ours.generated_tokens == theirs.generated_tokens == 6
    assert cosine(ours.vector, theirs.vector) > 0.9999


def test_end_of_turn_is_not_counted_and_generate_cuts_at_the_stop(standin):
    client, reference = scripted_pair(standin, ["Ġuser", "</", "match", ">", "Ġhistory"])
    [ours], [theirs] = client.generate(["u"], [""], 20, "</match>"), reference.generate(["u"], [""], 20, "</match>")
    assert ours == theirs and ours.text == " user" and ours.stopped
    [ours], [theirs] = client.generate(["u"], [""], 20, "<never>"), reference.generate(["u"], [""], 20, "<never>")
    assert ours == theirs and ours.generated_tokens == 5 and not ours.stopped  # end-of-turn ended it


def test_zero_budget_and_empty_batches_send_nothing(pair):
    client, reference = pair
    [ours] = client.reason(["hello"], 0)
    assert ours.text == "" and ours.generated_tokens == 0
    assert cosine(ours.vector, reference.embed_direct(["hello"])[0]) > 0.9999
    assert client.embed_items([]).shape == (0, reference.hidden_size) and client.generate([], [], 4, "x") == []


def test_a_prompt_the_server_refuses_is_a_request_error_not_retried(standin, tiny_loaded):
    servers = [standin(), standin()]
    for server in servers:
        server.faults.status = 400
    client = client_for(tiny_loaded, [s.url for s in servers], [s.url for s in servers])
    with pytest.raises(ReplicaRequestError, match="400"):
        client.embed_items(["x"])
    assert sum(s.calls["/v1/embeddings"] for s in servers) == 1
    assert client.pooling.healthy_count() == 2


def test_large_batches_are_sent_in_chunks(standin, tiny_loaded):
    server = standin()
    client = client_for(tiny_loaded, [server.url], [server.url])
    texts = [f"item {i}" for i in range(EMBED_CHUNK + 3)]
    vectors = client.embed_items(texts)
    assert server.calls["/v1/embeddings"] == 2 and vectors.shape == (len(texts), client.hidden_size)
    np.testing.assert_allclose(vectors[-1], client.embed_items([texts[-1]])[0], atol=1e-5)
