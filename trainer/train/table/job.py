"""The item-table job (`reasonrec train-table`): the served ranker's item table, sequence encoder and head
(`model.networks.item_table`; docs/design.md section 2 and 5).

1. Content features of every catalog item (`model.networks.item_features`): the language model's item states and MiniLM
   text vectors, cached on disk (`trainer.batch_cache`) under the model's fingerprint.
2. The table on the finished SASRec+ checkpoint of the same split: its encoder is `s` and its item embeddings are
   the warm rows, frozen; the content map `g` is trained against them and calibrated (`trainer.train.table.content`).
   Resumable per epoch.
3. The heads on the language model's `direct` state (`trainer.train.table.heads`), when `head` is on.
The artifact (`model.networks.table_artifact`) goes to `artifacts/tables/<dataset>-<protocol>-seed<seed>/`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from indexer.core.paths import artifacts_dir, sasrec_dir
from model.engines.base import Engine
from model.networks.item_table import TableConfig, TableModel
from model.networks.sasrec import SasrecScorer, is_finished
from model.networks.table_artifact import META_FILE, TableArtifact
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import check_same_run, make_split
from trainer.data.splits import ColdSplit, Split, sample_examples
from trainer.machine import machine_line
from trainer.train.epochs import RESUME_FILE, EpochState
from trainer.train.table.cold_slots import fit_cold_slots
from trainer.train.table.config import TableTrainConfig
from trainer.train.table.content import (
    Ranking,
    calibrate,
    content_shown,
    fold_residuals,
    load_sasrec,
    start_from_sasrec,
    train_content_map,
)
from trainer.train.table.features import item_features
from trainer.train.table.heads import train_heads

log = logging.getLogger(__name__)
ITEM_BATCH = 16


def train_table(config: TableTrainConfig, engine: Engine | None = None, command: str = "") -> TableArtifact:
    """Train (or resume, or return the finished artifact); `engine` is the language model when the caller has it
    loaded (else it is loaded when the features or the heads need it); `command` is recorded in the manifest."""
    folder = config.folder
    done = _finished(folder, config)
    if done is not None:
        return done
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    if engine is None and (config.llm_features or config.head):
        from model.engines.transformers_engine import load_engine

        engine = load_engine(config.model)
    items = list(ds.catalog)
    center, content = item_features(items, config.spec, engine, artifacts_dir() / "table-cache" / ds.name)
    warm_ids = {x.item_id for history in split.train.values() for x in history}
    warm = torch.tensor([item.item_id in warm_ids for item in items])
    sasrec = load_sasrec(config.sasrec_checkpoint or sasrec_dir(config.dataset, config.protocol, config.seed))
    shape = sasrec.net.config
    torch.manual_seed(config.seed)
    network = TableConfig(len(items), content.shape[1], engine.hidden_size if config.head and engine else 0,
                          shape.hidden, config.content_hidden, shape.max_len, shape.blocks, shape.heads, config.dropout)
    artifact = TableArtifact(TableModel(network, warm), [item.item_id for item in items], config.spec, center,
                             engine.fingerprint if engine is not None else None, {})
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    _train_on_sasrec(config, sasrec, artifact, features, ds, split, folder)
    if config.head:
        assert engine is not None
        artifact = TableArtifact.load(folder)
        train_heads(config, artifact, features, ds, split, engine, folder)
    artifact = TableArtifact.load(folder)
    artifact.save(folder, {**artifact.meta, "status": "done", "command": command})
    (folder / RESUME_FILE).unlink(missing_ok=True)
    return artifact


def _train_on_sasrec(config: TableTrainConfig, sasrec: SasrecScorer, artifact: TableArtifact, features: torch.Tensor,
                     ds: Dataset, split: Split, folder: Path) -> None:
    """SASRec+'s encoder and rows, frozen; g trained against them and calibrated (`trainer.train.table.content`)."""
    model, code = artifact.model, artifact.code_of
    fixed = start_from_sasrec(model, code, sasrec)
    log.info("training g on %s/%s against SASRec+: %d items (%d warm), at most %d epochs", ds.name, split.protocol,
             len(code), int(model.warm.sum()), config.max_epochs)
    valid = _valid_examples(config, split)
    stand_ins = 0.0 if isinstance(split, ColdSplit) else config.cold_frac
    sequences = _sequences(model.config.max_len, split, code)
    state = train_content_map(model, fixed, features, config, sequences, valid, code, stand_ins,
                              lambda state: artifact.save(folder, _meta(config, ds, split, state, "training")))
    best = TableArtifact.load(folder)
    ranked = Ranking(best.model, fixed, features, valid, code, content_shown(best.model, stand_ins, config.seed))
    calibration = calibrate(best.model, ranked, config.warm_tolerance)
    slots, slot_fit = fit_cold_slots(ranked, calibration["scale"], calibration["offset"], config.warm_tolerance)
    fold_residuals(best.model, fixed, features)
    log.info("g calibrated on validation: %s; cold slots: %s", calibration, slots)
    best.save(folder, {**_meta(config, ds, split, state, "encoder done"), "calibration": calibration,
                       "cold_slots": {**slots.to_meta(), "valid": slot_fit}})


def _sequences(max_len: int, split: Split, code: dict[str, int]) -> list[list[int]]:
    """Every training user's most recent `max_len + 1` items (users with at least two)."""
    return [[code[x.item_id] for x in h][-max_len - 1:] for h in split.train.values() if len(h) >= 2]


def _valid_examples(config: TableTrainConfig, split: Split) -> list:
    return split.valid if not config.valid_users else sample_examples(split.valid, config.valid_users, config.seed)


def _meta(config: TableTrainConfig, ds: Dataset, split: Split, state: EpochState, status: str) -> dict:
    return {
        "status": status, "model": "SASRec+'s encoder and rows (frozen) + content map g trained against them (full "
                                   "softmax, DropoutNet); validation: a share of the items served by g(c) alone",
        "config": config.fingerprint(),
        "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                 "interactions": ds.n_interactions},
        "split": {"protocol": split.protocol, "valid_examples": len(split.valid), "test_examples": len(split.test)},
        "seed": config.seed, "epochs": state.epoch, "best_epoch": state.best_epoch,
        "train_seconds": round(state.seconds, 1), "history": state.history or [],
        "metrics": {"valid": next((h for h in state.history or [] if h["epoch"] == state.best_epoch), {})},
        "machine": machine_line(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _finished(folder: Path, config: TableTrainConfig) -> TableArtifact | None:
    path = folder / META_FILE
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_same_run(folder, meta.get("config", {}), config.fingerprint(), "item-table")
    return TableArtifact.load(folder) if is_finished(meta) else None
