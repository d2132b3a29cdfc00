"""A finished item table as served, for measurements on its split (`benchmarks.cold_tradeoff`, `reasonrec
experiment cold-diagnosis`): the artifact, the content features of every catalog item (the cached item states),
SASRec+'s rows it was built on, and `Ranking`s of examples with the items without a residual (a cold-items
split's cold items) served by g(c) alone and every other item by its SASRec+ row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from indexer.core.paths import artifacts_dir, sasrec_dir, table_dir
from model.engines.base import Engine
from model.networks.table_artifact import TableArtifact
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import make_split
from trainer.data.splits import Example, Split
from trainer.train.table.content import Ranking, content_shown, load_sasrec, start_from_sasrec
from trainer.train.table.features import item_features


@dataclass
class ServedTable:
    dataset: Dataset
    split: Split
    artifact: TableArtifact
    table_folder: Path
    sasrec_folder: Path
    features: torch.Tensor
    """(n_items + 1, content width) content features by table code (row 0: padding)."""
    fixed: torch.Tensor
    """SASRec+'s rows by table code (zeros for items it never saw)."""

    @property
    def shown(self) -> torch.Tensor:
        """The items served by g(c) alone, by table code: those without a residual."""
        return content_shown(self.artifact.model, 0.0, 0)

    def shown_ids(self) -> list[str]:
        """Their item ids, in catalog order."""
        shown = self.shown
        return [i for i in self.dataset.catalog.ids() if bool(shown[self.artifact.code_of[i]])]

    def ranking(self, examples: Sequence[Example]) -> Ranking:
        """The examples ranked as served (examples without a history item in the table are left out)."""
        return Ranking(self.artifact.model, self.fixed, self.features, examples, self.artifact.code_of, self.shown)


def load_served_table(dataset: str, protocol: str = "cold-items", engine: Engine | None = None,
                      data_path: Path | None = None, cold_frac: float = 0.2, split_seed: int = 0, seed: int = 0,
                      table: Path | None = None, sasrec: Path | None = None) -> ServedTable:
    """The table `reasonrec train-table` wrote for `dataset`/`protocol`/`seed` (or the folder `table`) with its
    SASRec+ checkpoint and the content features from the table cache (`engine` encodes missing item states:
    smollm2 unless given)."""
    if engine is None:
        from model.engines.transformers_engine import load_engine

        engine = load_engine("smollm2")
    table_folder = table or table_dir(dataset, protocol, seed)
    sasrec_folder = sasrec or sasrec_dir(dataset, protocol, seed)
    artifact = TableArtifact.load(table_folder)
    ds = load_dataset(dataset, data_path)
    split = make_split(ds, protocol, cold_frac, split_seed)
    _, content = item_features(list(ds.catalog), artifact.spec, engine, artifacts_dir() / "table-cache" / ds.name)
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    fixed = start_from_sasrec(artifact.model, artifact.code_of, load_sasrec(sasrec_folder))
    return ServedTable(ds, split, artifact, table_folder, sasrec_folder, features, fixed)


def settings_apart(meta: dict, reference: dict) -> dict:
    """The training settings of a table (`meta["config"]`) that differ from those of `reference` (another table's
    meta): what sets two tables of one comparison apart (a seed, a loss weight)."""
    mine, theirs = meta.get("config", {}), reference.get("config", {})
    return {key: value for key, value in mine.items() if theirs.get(key) != value}
