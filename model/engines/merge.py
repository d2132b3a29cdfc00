"""Merging a LoRA adapter into its base weights for vLLM, and the fingerprint of a folder vLLM serves.

vLLM servers load plain HF folders, so a trained adapter is merged first (`reasonrec merge-adapter`): the base
model is loaded with the adapter applied and merged exactly as the transformers engine does in process
(`model.engines.loading.load_model`, fp32 `merge_and_unload`), then saved as fp32 safetensors with its tokenizer and a
`reasonrec-merged.json` that records what it was merged from.

A merged folder is fingerprinted as base + adapter (`model.engines.loading.folder_fingerprint`), by the vLLM engine and
by `load_model` alike, so indexes and cache entries made either way are interchangeable.
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.core.paths import models_dir
from model.engines.loading import (
    DEFAULT_MODEL,
    MERGED_FILE,
    default_model_dir,
    folder_weights_hash,
    load_model,
)


def merge_adapter(base: str, adapter: Path, out: Path | None = None) -> Path:
    """Write base + adapter, merged, to `out` (default `artifacts/models/<model>-lora-<adapter hash>`)."""
    loaded = load_model(base, adapter)
    fp = loaded.fingerprint
    out = out or models_dir() / f"{fp.model_id}-lora-{fp.adapter_hash}"
    loaded.model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    meta = {
        "base_model_id": fp.model_id, "base_weights_hash": fp.weights_hash, "adapter_hash": fp.adapter_hash,
        "adapter_path": str(Path(adapter).resolve()), "merged_weights_hash": folder_weights_hash(out),
    }
    (out / MERGED_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def model_folder(model: str, artifacts: Path | None = None) -> Path:
    """The HF folder of a `REASONREC_MODEL` value: "smollm2" is the converted default (under the `artifacts`
    root), anything else a path."""
    return default_model_dir(artifacts) if model == DEFAULT_MODEL else Path(model)
