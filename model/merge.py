"""Merging a LoRA adapter into its base weights for vLLM, and the fingerprint of a folder vLLM serves.

vLLM servers load plain HF folders, so a trained adapter is merged first (`reasonrec merge-adapter`): the base
model is loaded with the adapter applied and merged exactly as the transformers engine does in process
(`model.loading.load_model`, fp32 `merge_and_unload`), then saved as fp32 safetensors with its tokenizer and a
`reasonrec-merged.json` that records what it was merged from.

`served_fingerprint(folder)` is the `ModelFingerprint` of a folder the gateway's vLLM engine points at: for a
merged folder it is the fingerprint of base + adapter (the same as the transformers engine's with
`--adapter`), so indexes and cache entries made either way are interchangeable; the merged weights hash is
stored too and checked, so a folder whose weights were replaced is not mistaken for the merge. Any other
folder is fingerprinted like `load_model` does for a local folder (folder name, weights hash).
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.manifest import ModelFingerprint
from model.loading import (
    DEFAULT_MODEL,
    default_model_dir,
    folder_weights_hash,
    load_model,
)
from model.paths import artifacts_dir
from model.prompts import TEMPLATE_VERSION

MERGED_FILE = "reasonrec-merged.json"


def merge_adapter(base: str, adapter: Path, out: Path | None = None) -> Path:
    """Write base + adapter, merged, to `out` (default `artifacts/models/<model>-lora-<adapter hash>`)."""
    loaded = load_model(base, adapter)
    fp = loaded.fingerprint
    out = out or artifacts_dir() / "models" / f"{fp.model_id}-lora-{fp.adapter_hash}"
    loaded.model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    meta = {
        "base_model_id": fp.model_id, "base_weights_hash": fp.weights_hash, "adapter_hash": fp.adapter_hash,
        "adapter_path": str(Path(adapter).resolve()), "merged_weights_hash": folder_weights_hash(out),
    }
    (out / MERGED_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def model_folder(model: str) -> Path:
    """The HF folder of a `REASONREC_MODEL` value: "smollm2" is the converted default, anything else a path."""
    return default_model_dir() if model == DEFAULT_MODEL else Path(model)


def served_fingerprint(folder: Path) -> ModelFingerprint:
    """The fingerprint of the model in `folder` as the vLLM servers serve it (see the module docstring)."""
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
