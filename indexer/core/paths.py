"""Where reasonrec keeps its artifacts (converted models, indexes, adapters, reports).

One gitignored folder, `./artifacts` by default, moved with the environment variable `REASONREC_ARTIFACTS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from indexer.core.fingerprint import ModelFingerprint


def artifacts_dir(root: Path | None = None) -> Path:
    """The artifacts root: `root` when given (the service passes `REASONREC_ARTIFACTS` from its settings), else
    `$REASONREC_ARTIFACTS` if set (the jobs of the command line), else `./artifacts` (created on demand by writers)."""
    chosen = root if root is not None else Path(os.environ.get("REASONREC_ARTIFACTS", "artifacts"))
    return Path(chosen).expanduser().resolve()


def index_dir_for(dataset: str, fingerprint: ModelFingerprint, chosen: Path | None = None,
                  table: str | None = None, root: Path | None = None) -> Path:
    """The index folder of a dataset for one model+adapter+template (+ item table: `table` is its hash): `chosen`
    when one is given (a flag or `REASONREC_INDEX_DIR`), else the default where `reasonrec index` writes and the
    service looks. The one rule every command and the service follow.

    One default folder per fingerprint, so an index built by another model, adapter or template is never picked up.
    """
    if chosen is not None:
        return Path(chosen)
    name = f"{fingerprint.model_id}-{fingerprint.weights_hash}"
    if fingerprint.adapter_hash:
        name += f"-lora-{fingerprint.adapter_hash}"
    name += f"-tpl{fingerprint.template_version}" + (f"-table-{table}" if table else "")
    return artifacts_dir(root) / "indexes" / dataset / name


SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "artifacts"
"""Small trained artifacts committed with the repository (each with a manifest naming the command that made it),
so that `make serve` answers with them on a fresh machine without training first."""


def finished_or_shipped(trained: Path, shipped: Path, is_done: Callable[[Path], bool]) -> Path | None:
    """The locally trained artifact when its run is done, else the shipped one when there is one, else None."""
    for folder in (trained, shipped):
        if is_done(folder):
            return folder
    return None


def table_dir(dataset: str, protocol: str = "leave-one-out", seed: int = 0, root: Path | None = None) -> Path:
    """Where `reasonrec train-table` writes a dataset's item-table artifact, and where the service looks for it."""
    return artifacts_dir(root) / "tables" / f"{dataset}-{protocol}-seed{seed}"


def sasrec_dir(dataset: str, protocol: str = "leave-one-out", seed: int = 0, root: Path | None = None) -> Path:
    """Where `reasonrec train-sasrec` writes a dataset's SASRec+ checkpoint, and where the service looks for it."""
    return artifacts_dir(root) / "sasrec" / f"{dataset}-{protocol}-seed{seed}"


def rating_dir(dataset: str, seed: int = 0, root: Path | None = None) -> Path:
    """Where `reasonrec train-rating` writes a dataset's rating model, and where the service looks for it."""
    return artifacts_dir(root) / "rating" / f"{dataset}-seed{seed}"


def models_dir(root: Path | None = None) -> Path:
    """Where converted and merged language models live (`artifacts/models`)."""
    return artifacts_dir(root) / "models"


def reasoning_adapter_dir(dataset: str, protocol: str = "leave-one-out", seed: int = 0,
                          root: Path | None = None) -> Path:
    """Where `reasonrec train-reasoning` writes a dataset's reasoning adapter, and where the service looks for it."""
    return artifacts_dir(root) / "adapters" / f"{dataset}-{protocol}-reasoning-seed{seed}"
