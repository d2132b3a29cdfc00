"""The item-table job (`reasonrec train-table`): the served ranker's item table, sequence encoder and head
(`model.networks.item_table`; docs/design.md section 2 and 5).

1. Content features of every catalog item (`model.networks.item_features`): the language model's item states and MiniLM
   text vectors, cached on disk (`trainer.batch_cache`) under the model's fingerprint.
2. The table on the finished SASRec+ checkpoint of the same split: its encoder is `s` and its item embeddings are
   the warm rows, frozen; the content map `g` is trained against them and calibrated (`trainer.train.table_content`).
   Resumable per epoch.
3. The heads on the language model's `direct` state (`trainer.train.table_head`), when `head` is on.
The artifact (`model.networks.table_artifact`) goes to `artifacts/tables/<dataset>-<protocol>-seed<seed>/`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from indexer.core.catalog import Catalog
from indexer.core.fingerprint import ModelFingerprint
from indexer.core.paths import artifacts_dir, sasrec_dir, table_dir
from indexer.store import ItemStore
from model.engines.base import Engine
from model.networks.item_features import FeatureSpec, combine
from model.networks.item_table import TableConfig, TableModel
from model.networks.minilm import MiniLMEncoder, item_text
from model.networks.sasrec import SasrecScorer, is_finished
from model.networks.table_artifact import META_FILE, TableArtifact
from model.prompts import TEMPLATE_VERSION, item_prompt
from trainer.batch_cache import BatchCache
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import SplitConfig, check_same_run, make_split
from trainer.data.splits import ColdSplit, Split, sample_examples
from trainer.machine import machine_line
from trainer.train.epochs import RESUME_FILE, EpochState
from trainer.train.table_content import (
    calibrate,
    content_shown,
    fold_residuals,
    load_sasrec,
    start_from_sasrec,
    train_content_map,
)
from trainer.train.table_head import HeadTraining

log = logging.getLogger(__name__)
ITEM_BATCH = 16


@dataclass
class TableTrainConfig(SplitConfig, HeadTraining):
    """What `reasonrec train-table` trains (defaults: the recipe measured on ML-1M, docs/results/)."""

    model: str = "smollm2"
    """Language model of the content features and the head's states: smollm2, tiny or an HF folder."""
    llm_features: bool = True
    """Feed g the language model's item states."""
    minilm_features: bool = True
    """Feed g the MiniLM text vectors."""
    head: bool = True
    """Train the heads on the language model's direct states (`trainer.train.table_head`)."""
    content_hidden: int = 256
    """Hidden width of the content map g."""
    dropout: float = 0.1
    """Dropout in g during training."""
    residual_dropout: float = 0.1
    """Share of the items shown by g(c) instead of their SASRec+ row at each step, so g learns to place them
    (DropoutNet)."""
    sasrec_checkpoint: Path | None = None
    """The SASRec+ checkpoint to start from; default `artifacts/sasrec/<dataset>-<protocol>-seed<seed>`."""
    warm_tolerance: float = 0.05
    """How much of the warm targets' validation NDCG@10 the calibration of g may give up so that cold and hot-added
    items rank higher (relative): the exposure of new items against warm accuracy. On ML-100k's cold-items test
    split .05 gave cold HR@10 .043 at warm .203 (SASRec+ .209), .02 gave .002 at .208; `make bench-cold` shows the
    curve."""
    lr: float = 1e-3
    """Adam learning rate of g."""
    batch_size: int = 128
    """Users per step."""
    max_epochs: int = 60
    """At most this many epochs."""
    patience: int = 10
    """Stop after this many epochs without a better validation NDCG@10 (10, as SASRec+: on ML-1M the 1,000
    validation users' NDCG@10 wavers by about .005 between epochs, and 5 stopped the table at epoch 20 while it was
    still climbing)."""
    valid_users: int = 1000
    """Seeded validation users per epoch (0 = all; on ML-1M all 6,040 make an epoch about twice as long)."""
    head_users: int = 1500
    """Seeded training users whose last window of 20 training items gives the heads' samples (one per cut)."""
    seed: int = 0
    """Seed of the initialization, dropout, the order of users and the user samples."""
    out_dir: Path | None = None
    """Artifact folder; default `artifacts/tables/<dataset>-<protocol>-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.sasrec_checkpoint = Path(self.sasrec_checkpoint) if self.sasrec_checkpoint is not None else None
        super().__post_init__()
        if not 0 <= self.warm_tolerance < 1:
            raise ValueError(f"--warm-tolerance must be in [0, 1), got {self.warm_tolerance}")
        if not 0 <= self.residual_dropout < 1:
            raise ValueError(f"--residual-dropout must be in [0, 1), got {self.residual_dropout}")
        self.check_head_training()
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if min(self.batch_size, self.max_epochs, self.patience) < 1 or self.valid_users < 0:
            raise ValueError("--batch-size, --max-epochs, --patience must be >= 1, --valid-users >= 0")
        FeatureSpec(llm=self.llm_features, minilm=self.minilm_features)  # raises when no content feature is on

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(llm=self.llm_features, minilm=self.minilm_features)

    @property
    def folder(self) -> Path:
        return self.out_dir or table_dir(self.dataset, self.protocol, self.seed)

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where it is written or when training stops)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in ("out_dir", "max_epochs", "patience")}


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
        from trainer.train.table_head import train_heads

        assert engine is not None
        artifact = TableArtifact.load(folder)
        train_heads(config, artifact, features, ds, split, engine, folder)
    artifact = TableArtifact.load(folder)
    artifact.save(folder, {**artifact.meta, "status": "done", "command": command})
    (folder / RESUME_FILE).unlink(missing_ok=True)
    return artifact


def item_states(items: list, engine: Engine, cache: Path) -> np.ndarray:
    """The language model's raw item states (n, hidden) of `items`, cached on disk per batch of prompts."""
    batches = BatchCache(cache / "llm-items", {"items": engine.fingerprint.to_json()})
    return np.concatenate([batches.get_or_compute([item_prompt(i) for i in items[first : first + ITEM_BATCH]],
                                                  engine.embed_items)
                           for first in tqdm(range(0, len(items), ITEM_BATCH), desc="item states", unit="batch")])


def item_features(items: list, spec: FeatureSpec, engine: Engine | None, cache: Path
                  ) -> tuple[np.ndarray | None, np.ndarray]:
    """(center of the LLM item states or None, content features (n, width)) of `items`, cached per batch."""
    llm, center = None, None
    if spec.llm:
        assert engine is not None
        llm = item_states(items, engine, cache)
        center = llm.mean(axis=0).astype(np.float32)
    text = None
    if spec.minilm:
        texts = [item_text(i) for i in items]
        text = BatchCache(cache / "minilm-items", {"minilm": "all-MiniLM-L6-v2"}).get_or_compute(
            texts, lambda batch: MiniLMEncoder().encode(batch))
    return center, combine(spec, llm, text, center)


def table_store(artifact: TableArtifact, features: torch.Tensor, catalog: Catalog) -> ItemStore:
    """An in-memory item index of the table's rows, as `reasonrec index` builds it for serving."""
    with torch.inference_mode():
        rows = artifact.model.table(features)[1:].numpy()
    return ItemStore.create(Catalog({i: catalog[i] for i in artifact.item_ids}), rows, table_fingerprint(artifact),
                            table=artifact.table_hash or "training")


def table_fingerprint(artifact: TableArtifact) -> ModelFingerprint:
    """What a table index's manifest names as its model: the language model of the features, or MiniLM alone."""
    return artifact.fingerprint or ModelFingerprint("all-MiniLM-L6-v2", "minilm", None, TEMPLATE_VERSION)


def _train_on_sasrec(config: TableTrainConfig, sasrec: SasrecScorer, artifact: TableArtifact, features: torch.Tensor,
                     ds: Dataset, split: Split, folder: Path) -> None:
    """SASRec+'s encoder and rows, frozen; g trained against them and calibrated (`trainer.train.table_content`)."""
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
    calibration = calibrate(best.model, fixed, features, valid, code, content_shown(best.model, stand_ins, config.seed),
                            config.warm_tolerance)
    fold_residuals(best.model, fixed, features)
    log.info("g calibrated on validation: %s", calibration)
    best.save(folder, {**_meta(config, ds, split, state, "encoder done"), "calibration": calibration})


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
