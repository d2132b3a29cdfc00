"""Merging a LoRA adapter for vLLM (model.engines.merge, `reasonrec merge-adapter`): the merged folder computes what
base + adapter computes in process, and it carries the base + adapter fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from peft import LoraConfig, get_peft_model

from model.engines.loading import MERGED_FILE, folder_fingerprint, load_model
from model.engines.tiny import tiny_llama
from model.engines.transformers_engine import TransformersEngine
from trainer.cli import main

TEXTS = ["Title: Heat (1995)", "hello"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A random (non-zero) LoRA adapter on the tiny model."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(tiny_llama(), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "tiny-merged"
    assert main(["merge-adapter", "--model", "tiny", "--adapter", str(adapter), "--out", str(out)]) == 0
    return out


def test_merged_folder_equals_base_plus_adapter(adapter, merged):
    out = merged
    in_process = load_model("tiny", adapter)
    assert folder_fingerprint(out) == in_process.fingerprint and in_process.fingerprint.adapter_hash
    loaded = load_model(str(out))
    assert loaded.fingerprint == in_process.fingerprint  # in process too: indexes and caches are interchangeable
    merged = TransformersEngine(loaded).embed_items(TEXTS)
    np.testing.assert_allclose(merged, TransformersEngine(in_process).embed_items(TEXTS), atol=1e-5)
    assert not np.allclose(merged, TransformersEngine(load_model("tiny")).embed_items(TEXTS), atol=1e-3)


def test_a_merged_folder_with_other_weights_is_refused(merged, tmp_path):
    out = Path(shutil.copytree(merged, tmp_path / "copy"))
    meta = json.loads((out / MERGED_FILE).read_text())
    (out / MERGED_FILE).write_text(json.dumps({**meta, "merged_weights_hash": "0" * 12}))
    with pytest.raises(ValueError, match="re-run `reasonrec merge-adapter`"):
        folder_fingerprint(out)


def test_a_plain_folder_is_fingerprinted_as_load_model_does(tmp_path):
    folder = tmp_path / "plain-model"
    tiny_llama().save_pretrained(folder, safe_serialization=True)
    fp = folder_fingerprint(folder)
    assert fp.model_id == "plain-model" and fp.adapter_hash is None and len(fp.weights_hash) == 12


def test_an_adapter_on_top_of_a_merged_folder_is_refused(merged, adapter):
    with pytest.raises(ValueError, match="already has the adapter"):
        load_model(str(merged), adapter)
