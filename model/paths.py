"""Where reasonrec keeps its artifacts (converted models, indexes, adapters, reports).

One gitignored folder, `./artifacts` by default, moved with the environment variable `REASONREC_ARTIFACTS`.
"""

from __future__ import annotations

import os
from pathlib import Path

from indexer.manifest import ModelFingerprint


def artifacts_dir() -> Path:
    """The artifacts root: `$REASONREC_ARTIFACTS` if set, else `./artifacts` (created on demand by writers)."""
    return Path(os.environ.get("REASONREC_ARTIFACTS", "artifacts")).expanduser().resolve()


def default_index_dir(dataset: str, fingerprint: ModelFingerprint) -> Path:
    """Where `reasonrec index` writes, and the service looks for, a dataset's index for one model+adapter+template.

    One folder per fingerprint, so an index built by another model, adapter or template is never picked up.
    """
    name = f"{fingerprint.model_id}-{fingerprint.weights_hash}"
    if fingerprint.adapter_hash:
        name += f"-lora-{fingerprint.adapter_hash}"
    return artifacts_dir() / "indexes" / dataset / f"{name}-tpl{fingerprint.template_version}"
