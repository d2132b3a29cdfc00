"""A reasoning adapter served through the gateway (REASONREC_ADAPTER) beside the base model's index:
`/recommend` with `ranker: reasoning` returns the reasoning the adapter was taught and names the adapter, the
index built on the base weights serves it, and a reasoning the budget cuts is counted in
`reasonrec_reasoning_budget_capped_total`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from service_helpers import build_index, history, tiny_settings

from model.engines.loading import adapter_hash, load_model
from model.engines.transformers_engine import load_engine
from model.prompts import ANSWER_MARKER, UserHistory
from trainer.reasoning.packing import WindowSample, pack_window
from trainer.train.reasoning_sft import ReasoningSftConfig, add_lora, train_packed

RATIONALE = "Mostly Drama. Lately Western. Next: likely a 1990s Western."
HISTORIES = (("3", "7", "12"), ("5", "9"), ("20", "21", "22", "23"))


@pytest.fixture(scope="module")
def adapter(catalog, tmp_path_factory) -> Path:
    """A tiny-model LoRA adapter taught to answer the three histories with RATIONALE + `<answer>`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps are far faster on one thread when the cores are shared
    try:
        loaded = load_model("tiny")
        rows = []
        for ids in HISTORIES:
            entries = [(e["item_id"], e["rating"], e["timestamp"]) for e in history(*ids)]
            lines = UserHistory.of_items(entries, catalog).lines
            rows.append(pack_window(loaded.tokenizer, WindowSample(lines, (len(lines),), (RATIONALE + ANSWER_MARKER,))))
        model = add_lora(loaded.model, ReasoningSftConfig(model="tiny", lora_top_layers=0))
        train_packed(model, rows, steps=80, lr=1e-2, pad_id=loaded.tokenizer.pad_token_id, rows_per_step=3)
        folder = tmp_path_factory.mktemp("reasoning-adapter")
        model.save_pretrained(folder)
    finally:
        torch.set_num_threads(threads)
    return folder


def test_served_reasoning_is_the_taught_one_and_cut_ones_are_counted(serve, catalog, adapter, tmp_path):
    index = build_index(load_engine("tiny"), catalog, tmp_path / "index")  # item vectors: the base weights
    server = serve(tiny_settings(index, adapter=adapter, default_reasoning_tokens=48, max_reasoning_tokens=64))
    capped = "reasonrec_reasoning_budget_capped_total"

    data = server.client.post("/recommend", json={"history": history(*HISTORIES[0]), "ranker": "reasoning"}).json()
    assert data["fallback"] is None and data["reasoning"] == RATIONALE
    assert data["model"]["adapter_hash"] is None and data["model"]["reasoning_adapter"] == adapter_hash(adapter)
    assert len(data["items"]) == 10 and not set(HISTORIES[0]) & {item["item_id"] for item in data["items"]}
    assert server.metric(capped) == 0

    cut = server.client.post("/recommend", json={"history": history(*HISTORIES[2]), "ranker": "reasoning",
                                                 "max_reasoning_tokens": 6}).json()
    assert cut["fallback"] is None and RATIONALE.startswith(cut["reasoning"]) and cut["reasoning"] != RATIONALE
    assert server.metric(capped) == 1
    again = server.client.post("/recommend", json={"history": history(*HISTORIES[2]), "ranker": "reasoning",
                                                   "max_reasoning_tokens": 6}).json()
    assert again["cached"] is True and server.metric(capped) == 1  # a cached answer is not counted again


def test_the_conclusion_term_raises_the_concluded_genre(serve, catalog, adapter, tmp_path):
    """With the conclusion term saved beside the adapter, the reasoning's "Next: likely a 1990s Western" raises
    the Westerns by the term's genre weight: the response names the conclusion, and a large weight puts Westerns
    first, the rest keeping the order the state gives them."""
    import shutil

    from model.rankers.conclusion import ConclusionTerm

    folder = Path(shutil.copytree(adapter, tmp_path / "adapter"))
    ConclusionTerm(genre=100.0, decade=0.0).save(folder, {"command": "test"})
    index = build_index(load_engine("tiny"), catalog, tmp_path / "index")
    settings = tiny_settings(index, adapter=folder, default_reasoning_tokens=48, max_reasoning_tokens=64)
    server = serve(settings)
    body = {"history": history(*HISTORIES[0]), "ranker": "reasoning", "k": 5}
    data = server.client.post("/recommend", json=body).json()
    assert data["reasoning"] == RATIONALE and data["conclusion"] == {"genre": "Western", "decade": 1990}
    assert all("Western" in catalog[item["item_id"]].genres for item in data["items"]), data["items"]
    assert any("conclusion enters the score" in note for note in data["notes"])
    without = serve(tiny_settings(index, adapter=adapter, default_reasoning_tokens=48, max_reasoning_tokens=64))
    plain = without.client.post("/recommend", json=body).json()
    assert plain["conclusion"] == data["conclusion"] and plain["items"] != data["items"]  # read, not scored
