"""The tiny cold-items table the cold-item measurements read (`reasonrec experiment cold-diagnosis`,
`title-history`): a cycle dataset, its SASRec+ and a table trained on it, once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import write_cycle_ml1m

from model.engines.transformers_engine import TransformersEngine
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec
from trainer.train.table.config import TableTrainConfig
from trainer.train.table.job import train_table
from trainer.train.table.served import ServedTable, load_served_table


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("cold") / "data")


@pytest.fixture(scope="module")
def served(data: Path, tiny_engine: TransformersEngine, module_artifacts: Path) -> ServedTable:
    train_sasrec(SasrecTrainConfig(dataset="ml-1m-zip", data_path=data, protocol="cold-items", max_len=12, hidden=16,
                                   blocks=1, dropout=0.0, lr=5e-3, batch_size=16, max_epochs=3, patience=2))
    train_table(TableTrainConfig(dataset="ml-1m-zip", data_path=data, protocol="cold-items", model="tiny",
                                 minilm_features=False, content_hidden=32, dropout=0.0, lr=1e-2, batch_size=16,
                                 max_epochs=2, patience=2, valid_users=0, head=False), tiny_engine)
    return load_served_table("ml-1m-zip", "cold-items", tiny_engine, data)
