"""The SASRec+ training job (`reasonrec train-sasrec`): full softmax cross-entropy over all items at every
position of each user's training sequence, Adam, early stopping on validation NDCG@10 (full ranking, history
excluded), as in Klenitskiy & Vasilev, RecSys 2023 ("Turning Dross Into Gold Loss"); network and scorer in
`model.networks.sasrec`.

One epoch = every user's most recent `max_len + 1` training items once (inputs = all but the last, labels =
all but the first), in a seeded random order. The checkpoint folder holds the best model so far
(`model.safetensors` + `meta.json`: config, item vocabulary, data, split, metrics, seed; what the service
loads) and `resume.pt` (the latest epoch's model, optimizer and random states): rerunning the same command
resumes after the last finished epoch, and is a no-op once training is done. Rerunning with a smaller
`--max-epochs` ends an unfinished run at once (test metrics of the best epoch so far; `meta.json` says so).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from indexer.core.catalog import Catalog
from indexer.core.paths import sasrec_dir
from model.networks.sasrec import META_FILE, SasrecConfig, SasrecNet, SasrecScorer, is_finished
from model.rankers.sasrec import SasrecRanker
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import SplitConfig, check_same_run, make_split, test_parts
from trainer.data.splits import Split
from trainer.machine import machine_line
from trainer.protocol.harness import CoreRanker, rank_examples
from trainer.protocol.metrics import mean_metrics
from trainer.train.epochs import EpochRun, EpochState, run_epochs, softmax_epoch

log = logging.getLogger(__name__)


@dataclass
class SasrecTrainConfig(SplitConfig):
    """What `reasonrec train-sasrec` trains (defaults: the paper's SASRec+ on ML-1M)."""

    max_len: int = 200
    """Most recent items per training sequence and per scored history."""
    hidden: int = 64
    """Embedding and hidden size."""
    blocks: int = 2
    """Self-attention blocks."""
    heads: int = 1
    """Attention heads."""
    dropout: float = 0.1
    """Dropout rate (the paper's SASRec config uses 0.1)."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 128
    """Users per training step."""
    max_epochs: int = 100
    """Upper bound on epochs (the paper's 100)."""
    patience: int = 10
    """Stop after this many epochs without a better validation NDCG@10."""
    seed: int = 0
    """Seed of the initialization, dropout and the order of users."""
    out_dir: Path | None = None
    """Checkpoint folder; default `artifacts/sasrec/<dataset>-<protocol>-seed<seed>`."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        super().__post_init__()
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("--batch-size, --max-epochs and --patience must be >= 1")
        SasrecConfig(n_items=1, max_len=self.max_len, hidden=self.hidden, blocks=self.blocks, heads=self.heads,
                     dropout=self.dropout)  # checks the network flags

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir or sasrec_dir(self.dataset, self.protocol, self.seed)

    def fingerprint(self) -> dict:
        """Everything that decides the result (not where it is written)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k != "out_dir"}


def train_sasrec(config: SasrecTrainConfig, ds: Dataset | None = None) -> SasrecScorer:
    """Train (or resume, or return the finished checkpoint) and return the best model's scorer. `ds` is the
    already loaded `config.dataset`, if the caller has it."""
    folder = config.checkpoint_dir
    done = _finished(folder, config)
    if done is not None:
        return done
    ds = ds or load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    vocab = _vocabulary(ds, split)
    code = {item_id: c for c, item_id in enumerate(vocab, start=1)}
    sequences = [[code[x.item_id] for x in h][-config.max_len - 1:] for h in split.train.values() if len(h) >= 2]
    torch.manual_seed(config.seed)
    net = SasrecNet(SasrecConfig(len(vocab), config.max_len, config.hidden, config.blocks, config.heads,
                                 config.dropout))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    order_gen = torch.Generator().manual_seed(config.seed)
    run = EpochRun(folder, config.fingerprint(), "SASRec", net, optimizer, order_gen, ignore=STOPPING_LIMITS)
    log.info("training SASRec+ on %s/%s: %d users, %d items, at most %d epochs", ds.name, split.protocol,
             len(sequences), len(vocab), config.max_epochs)

    def save_best(state: EpochState) -> None:
        SasrecScorer(net, vocab).save(folder, _meta(config, ds, split, state, "training"))

    state = run_epochs(run, config.max_epochs, config.patience,
                       lambda epoch: _epoch(net, optimizer, sequences, config.batch_size, order_gen, epoch),
                       lambda: _validate(net, vocab, split, ds.catalog), save_best)
    return _finish(run, config, ds, split, state)


def _vocabulary(ds: Dataset, split: Split) -> list[str]:
    """Items with at least one training interaction, in catalog order: the items SASRec can score."""
    seen = {x.item_id for history in split.train.values() for x in history}
    return [item_id for item_id in ds.catalog.ids() if item_id in seen]


def _epoch(net: SasrecNet, optimizer: torch.optim.Optimizer, sequences: list[list[int]], batch_size: int,
           order_gen: torch.Generator, epoch: int) -> float:
    """One pass over the users in a seeded random order; returns the mean loss per batch."""
    net.train()
    return softmax_epoch(sequences, batch_size, order_gen, epoch, optimizer,
                         lambda inputs, real: net.item_logits(net(inputs)[real]))


def _validate(net: SasrecNet, vocab: list[str], split: Split, catalog: Catalog) -> dict[str, float]:
    """Mean metrics on the validation examples, full ranking over the vocabulary, history excluded."""
    scorer = SasrecScorer(net, vocab)  # puts the network in eval mode; the next epoch switches it back
    result = rank_examples(CoreRanker(SasrecRanker(scorer), catalog, vocab), split.valid, vocab, desc="validating")
    return mean_metrics(result.per_query())


def _test_metrics(scorer: SasrecScorer, split: Split, catalog: Catalog) -> dict[str, dict[str, float]]:
    ranker = CoreRanker(SasrecRanker(scorer), catalog, scorer.item_ids)
    return {part: mean_metrics(rank_examples(ranker, examples, scorer.item_ids, desc=f"testing ({part})").per_query())
            for part, examples in test_parts(split).items()}


def _meta(config: SasrecTrainConfig, ds: Dataset, split: Split, state: EpochState, status: str) -> dict:
    return {
        "status": status, "model": "SASRec+ (full softmax cross-entropy)", "config": config.fingerprint(),
        "data": {"dataset": ds.name, "users": len(ds.histories), "items": len(ds.catalog),
                 "interactions": ds.n_interactions},
        "split": {"protocol": split.protocol, "train_interactions": sum(map(len, split.train.values())),
                  "valid_examples": len(split.valid), "test_examples": len(split.test)},
        "seed": config.seed, "epochs": state.epoch, "best_epoch": state.best_epoch,
        "train_seconds": round(state.seconds, 1), "history": state.history or [],
        "metrics": {"valid": next((h for h in state.history or [] if h["epoch"] == state.best_epoch), {})},
        "machine": machine_line(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _finished(folder: Path, config: SasrecTrainConfig) -> SasrecScorer | None:
    """The scorer of a finished run with this config; an error for a folder that holds another config."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    _check_same_config(folder, meta.get("config", {}), config)
    return SasrecScorer.load(folder) if is_finished(meta) else None


STOPPING_LIMITS = ("max_epochs", "patience")
"""May change between runs of one folder: a smaller --max-epochs ends an unfinished run now (test metrics of the best
epoch so far, marked done), a larger one or more patience lets it go on."""


def _check_same_config(folder: Path, stored: dict, config: SasrecTrainConfig) -> None:
    check_same_run(folder, stored, config.fingerprint(), "SASRec", ignore=STOPPING_LIMITS)


def _finish(run: EpochRun, config: SasrecTrainConfig, ds: Dataset, split: Split, state: EpochState) -> SasrecScorer:
    """Load the best model, add its test metrics to the metadata and mark the run done."""
    folder = run.folder
    scorer = SasrecScorer.load(folder)
    meta = _meta(config, ds, split, state, "done")
    meta["metrics"]["test"] = _test_metrics(scorer, split, ds.catalog)
    meta["stopped"] = ("early stopping" if state.bad_epochs >= config.patience
                       else f"max epochs ({config.max_epochs})")
    scorer.save(folder, meta)
    run.done()
    return scorer
