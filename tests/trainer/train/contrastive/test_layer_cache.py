"""Top-layer LoRA on cached lower-layer states (`trainer.train.contrastive.layer_cache`) and the training job's
`sample_pool` mode: the cached path gives the full model's vectors and gradients, states are computed once per
prompt (users and items), the steps cycle through the pool, and an interrupted pool run resumes to the same
adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cl_helpers import lora_weights, tiny_config
from peft import LoraConfig, get_peft_model
from trainer_helpers import write_cycle_ml1m

import trainer.train.contrastive.job as contrastive
import trainer.train.contrastive.layer_cache as layer_cache
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import item_prompt
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.train.contrastive.config import ContrastiveConfig
from trainer.train.contrastive.job import ADAPTER_META, train_contrastive
from trainer.train.contrastive.layer_cache import LowerLayerCache
from trainer.train.contrastive.samples import TrainingSamples

TEXTS = ["a user who liked Toy Story (1995) and Heat (1995)", "short",
         "a much longer history: Heat (1995) 5 stars 2w ago, Casino (1995) 4 stars 3d ago, Jumanji (1995) 2 stars"]


@pytest.fixture()
def top_lora_engine() -> TransformersEngine:
    """The tiny model (2 layers) with a random, non-zero LoRA on its top layer only."""
    loaded = load_model("tiny")
    torch.manual_seed(0)
    model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                                                    layers_to_transform=[1]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    model.eval()
    return TransformersEngine(loaded, batch_size=4)


def test_cached_states_give_the_full_models_vectors_and_gradients(top_lora_engine: TransformersEngine,
                                                                  tmp_path: Path) -> None:
    engine = top_lora_engine
    full = engine.answer_states(TEXTS)
    full.square().sum().backward()
    full_grads = {n: p.grad.clone() for n, p in engine.model.named_parameters() if p.grad is not None}
    engine.model.zero_grad(set_to_none=True)
    cached = LowerLayerCache(engine, 1, tmp_path)
    from_states = cached.answer_states(TEXTS)
    from_states.square().sum().backward()
    torch.testing.assert_close(from_states, full, atol=1e-5, rtol=1e-5)
    assert full_grads and all("lora" in n and ".layers.1." in n for n in full_grads)
    for name, grad in full_grads.items():
        torch.testing.assert_close(dict(engine.model.named_parameters())[name].grad, grad, atol=1e-4, rtol=1e-4)
    assert cached.computed == 3 and len(list(tmp_path.glob("*.npy"))) == 3
    cached.answer_states(TEXTS[::-1])  # any batch of known prompts: nothing computed again
    assert cached.computed == 3
    again = LowerLayerCache(engine, 1, tmp_path)  # a new process: the states come from disk
    torch.testing.assert_close(torch.as_tensor(again.embed_items(TEXTS[1:])),
                               torch.as_tensor(engine.embed_items(TEXTS[1:])), atol=1e-5, rtol=1e-5)
    assert again.computed == 0
    assert len(engine.model.get_decoder().layers) == 2  # the full stack is back after each call


def test_the_first_lora_layer_must_leave_layers_to_cache(tiny_engine: TransformersEngine) -> None:
    for layer in (0, 2):
        with pytest.raises(ValueError, match="first LoRA layer must be in 1..1"):
            LowerLayerCache(tiny_engine, layer, None)


def test_sample_pool_needs_top_layer_lora() -> None:
    with pytest.raises(ValueError, match="--sample-pool"):
        ContrastiveConfig(sample_pool=10, lora_top_layers=0)
    with pytest.raises(ValueError, match="--sample-pool"):
        ContrastiveConfig(sample_pool=-1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("pool") / "data")


def pool_config(data: Path, out: Path, **overrides: object) -> ContrastiveConfig:
    return tiny_config(data, out, steps=8, valid_every=4, lora_top_layers=1, sample_pool=20, **overrides)


def test_the_pool_is_fixed_and_each_pass_visits_every_batch_once(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    samples = TrainingSamples(ds, make_split(ds, "leave-one-out"), 50)
    pool = samples.pool(20, 8, seed=0)
    assert [len(b) for b in pool] == [8, 8, 4] and pool == samples.pool(20, 8, seed=0)
    examples = [e for batch in pool for e in batch]
    assert len({e.user_id for e in examples}) == min(20, len(samples.users))
    assert all(e.history == samples.sequences[e.user_id][:len(e.history)] for e in examples)
    lengths = [len(samples.user_prompt(e)) for e in examples]
    assert lengths == sorted(lengths)
    for first in (0, 3, 6):
        assert sorted(TrainingSamples.pool_batch(s, 3, 0) for s in range(first, first + 3)) == [0, 1, 2]


def test_a_pool_run_computes_each_prompts_lower_states_once_and_resumes_to_the_same_adapter(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_lower, real_step = LowerLayerCache._lower, contrastive._train_step
    lowered: list[str] = []
    trained_on: list[list[str]] = []

    def spy_lower(self: LowerLayerCache, texts: list[str]) -> list[torch.Tensor]:
        lowered.extend(texts)
        return real_lower(self, texts)

    def spy_step(*args: object) -> object:
        trained_on.append(sorted(e.user_id for e in args[6]))
        return real_step(*args)

    monkeypatch.setattr(layer_cache.LowerLayerCache, "_lower", spy_lower)
    monkeypatch.setattr(contrastive, "_train_step", spy_step)
    config = pool_config(data, tmp_path / "whole")
    folder = train_contrastive(config)
    ds = load_dataset(config.dataset, config.data_path)
    samples = TrainingSamples(ds, make_split(ds, config.protocol), config.recent_targets)
    item_prompts = {item_prompt(samples.items[samples.item_ids[c]]) for c in samples.warm_codes}
    # every item (encoded at the start, re-encoded twice, drawn in steps), 20 pooled and 20 validation users:
    # each prompt lowered once, though 8 steps and 3 validations ran
    assert len(lowered) == len(set(lowered)) and item_prompts <= set(lowered)
    assert len(set(lowered) - item_prompts) == 40
    assert trained_on[:3] != trained_on[3:6] and sorted(trained_on[:3]) == sorted(trained_on[3:6])
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert "fixed pool of 20 samples" in meta["method"] and [p["step"] for p in meta["curve"]] == [0, 4, 8]

    calls = {"n": 0}

    def dies_at_step_6(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(contrastive, "_train_step", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_contrastive(pool_config(data, tmp_path / "interrupted"))
    monkeypatch.setattr(contrastive, "_train_step", real_step)
    resumed = train_contrastive(pool_config(data, tmp_path / "interrupted"))
    whole, again = lora_weights(folder), lora_weights(resumed)
    for name in whole:
        torch.testing.assert_close(again[name], whole[name], atol=1e-5, rtol=1e-4)
