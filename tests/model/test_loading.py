"""Model loading: the tiny model, a saved HF folder, a LoRA adapter, and their fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import TEMPLATE_VERSION


def test_tiny_model_fingerprint_is_stable():
    a, b = load_model("tiny"), load_model("tiny")
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint.model_id == "tiny-llama" and a.fingerprint.template_version == TEMPLATE_VERSION
    assert a.fingerprint.adapter_hash is None and a.tokenizer.padding_side == "left"


def test_local_folder_loads_with_identical_outputs(tmp_path):
    tiny = load_model("tiny")
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.fingerprint.model_id == "m" and len(loaded.fingerprint.weights_hash) == 12
    assert load_model(str(tmp_path / "m")).fingerprint == loaded.fingerprint  # cached hash, same answer
    a = TransformersEngine(tiny).embed_items(["x y z"])
    b = TransformersEngine(loaded).embed_items(["x y z"])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_lora_adapter_changes_vectors_and_fingerprint(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model("tiny")
    peft_model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = load_model("tiny", adapter=tmp_path / "adapter")
    assert with_adapter.fingerprint.adapter_hash and len(with_adapter.fingerprint.adapter_hash) == 12
    assert with_adapter.fingerprint.weights_hash == load_model("tiny").fingerprint.weights_hash
    plain = TransformersEngine(load_model("tiny")).embed_items(["x y z"])
    adapted = TransformersEngine(with_adapter).embed_items(["x y z"])
    assert not np.allclose(plain, adapted, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_model("tiny", adapter=tmp_path)
