"""The settings of the item-table job (`reasonrec train-table`): one dataclass the job, its content map
(`trainer.train.table.content`) and its heads (`trainer.train.table.heads`) all read, and the head settings the
reasoning-head experiment shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from indexer.core.paths import table_dir
from model.networks.item_features import FeatureSpec
from trainer.data.protocols import SplitConfig


@dataclass
class HeadTraining:
    """How heads are trained: the settings the table job and the reasoning-head job share."""

    head_lr: float = 1e-3
    """AdamW learning rate of the heads."""
    head_weight_decay: float = 1e-2
    """AdamW weight decay of the heads."""
    head_epochs: int = 40
    """At most this many passes over the heads' samples."""

    def check_head_training(self) -> None:
        """Errors that name the flag (call from the config's `__post_init__`)."""
        if self.head_lr <= 0 or self.head_weight_decay < 0 or self.head_epochs < 1:
            raise ValueError("--head-lr must be positive, --head-weight-decay >= 0, --head-epochs >= 1")


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
    """Train the heads on the language model's direct states (`trainer.train.table.heads`)."""
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
