"""The heads of the item-table job (`trainer.train.table.job`): `f`, a small network on the language model's `direct`
state `h` (docs/design.md section 2), trained on states cached once per run.

Samples: for each of `head_users` seeded training users, the window of their 20 training items before the last
one; every cut k of it is a sample (prompt = the window's first k lines, target = the item after them, `s` reads
the whole training history up to the cut). One forward pass per window gives the states of all its cuts
(`TransformersEngine.direct_states_of_cuts`, prefix sharing). Validation: seeded validation users, the served
prompt (their 20 most recent items). Both are cached on disk per window under the model's fingerprint.

Two heads, both trained with full softmax cross-entropy over the frozen table's warm items, AdamW with weight
decay, early stopping on validation NDCG@10 (history excluded): the served `u = s(history) + f(h)` (s frozen),
and the ablation `u = f(h)` alone, so every report can say what the language model's state adds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from model.engines.base import Engine
from model.networks.item_table import scores, state_head
from model.networks.table_artifact import TableArtifact
from model.prompts import MAX_HISTORY_LINES, UserHistory
from model.rankers.table import history_rows, user_vectors
from trainer.batch_cache import BatchCache
from trainer.data.datasets import Dataset, Interaction
from trainer.data.splits import Example, Split, sample_examples
from trainer.protocol.harness import RankingResult, rank_examples, user_history
from trainer.protocol.metrics import mean_metrics
from trainer.train.table.config import HeadTraining, TableTrainConfig
from trainer.train.table.features import table_store

log = logging.getLogger(__name__)
BATCH = 256


@dataclass
class HeadData:
    """States, frozen s(history) vectors and targets of a set of examples."""

    examples: list[Example]
    states: torch.Tensor
    s_vectors: torch.Tensor
    targets: torch.Tensor


class _FixedVectors:
    """Validation ranker: precomputed user vectors against the table rows (the harness's `EvalRanker`)."""

    name = "head-validation"
    batch_size = 512

    def __init__(self, examples: list[Example], users: np.ndarray, rows: np.ndarray) -> None:
        self.row_of = {(e.user_id, e.target.item_id): i for i, e in enumerate(examples)}
        self.users, self.rows = users, rows

    def scores(self, examples: list[Example]) -> np.ndarray:
        users = self.users[[self.row_of[(e.user_id, e.target.item_id)] for e in examples]]
        return users @ self.rows[:, :-1].T + self.rows[:, -1]


def train_heads(config: TableTrainConfig, artifact: TableArtifact, features: torch.Tensor, ds: Dataset,
                split: Split, engine: Engine, folder: Path) -> None:
    """Train the served head and the ablation head; save them into the artifact with their validation metrics."""
    store = table_store(artifact, features, ds.catalog)
    with torch.inference_mode():
        rows = artifact.model.table(features)[1:].numpy()
    cache = BatchCache(folder.parent / f"{folder.name}-states", {"direct": engine.fingerprint.to_json()})
    windows = {"training": training_windows(split, config.head_users, config.seed),
               "validation": served_windows(sample_examples(split.valid, 300, config.seed))}
    data = {name: head_data(w, ds, store, artifact, direct_states(w, ds, engine, cache, name))
            for name, w in windows.items()}
    served_head = artifact.model.head
    assert served_head is not None
    metrics = {"samples": len(data["training"].examples), "valid_users": len(data["validation"].examples)}
    metrics["s_alone"] = evaluate_head(data["validation"], rows, artifact.item_ids, None, "none")
    metrics["served"] = fit_head(config, config.seed, served_head, data, rows, artifact.item_ids, "residual")
    alone = state_head(artifact.model.config)
    metrics["alone"] = fit_head(config, config.seed, alone, data, rows, artifact.item_ids, "alone")
    artifact.alone = alone
    artifact.save(folder, {**artifact.meta, "heads": metrics})
    log.info("heads: valid NDCG@10 s alone %.4f, s + f(h) %.4f, f(h) alone %.4f", metrics["s_alone"]["NDCG@10"],
             metrics["served"]["NDCG@10"], metrics["alone"]["NDCG@10"])


Window = tuple[list[Interaction], list[tuple[int, Example]]]
"""History lines shown by a prompt window, and its (cut k, example) pairs: example's prompt = the first k lines."""


def training_windows(split: Split, users: int, seed: int) -> list[Window]:
    """For each sampled training user, the window of their (up to) 20 training items before the last one, and
    every cut k of it: the example whose history is everything up to the window's k-th item."""
    eligible = sorted(u for u, h in split.train.items() if len(h) >= 2)
    chosen = sorted(eligible[i] for i in np.random.default_rng([seed, 7]).permutation(len(eligible))[:users])
    windows = []
    for user in chosen:
        history = split.train[user]
        start = max(0, len(history) - 1 - MAX_HISTORY_LINES)
        window = history[start : len(history) - 1]
        windows.append((window, [(k, Example(user, history[: start + k], history[start + k]))
                                 for k in range(1, len(window) + 1)]))
    return windows


def served_windows(examples: list[Example]) -> list[Window]:
    """Each example with the prompt the service would show: its 20 most recent items."""
    return [(e.history[-MAX_HISTORY_LINES:], [(len(e.history[-MAX_HISTORY_LINES:]), e)]) for e in examples]


def direct_states(windows: list[Window], ds: Dataset, engine: Engine, cache: BatchCache, name: str) -> np.ndarray:
    """The direct states of every (window, cut) example, in order, one forward pass per window, cached."""
    return np.concatenate([_window_states(window, [k for k, _ in pairs], ds, engine, cache)
                           for window, pairs in tqdm(windows, desc=f"{name} states", unit="window")])


def head_data(windows: list[Window], ds: Dataset, store, artifact: TableArtifact, states: np.ndarray) -> HeadData:
    """The examples of `windows` with their `states` (one row per example, in order), s(history) and targets."""
    examples = [example for _, pairs in windows for _, example in pairs]
    histories = [history_rows(store, user_history(e, ds.catalog), artifact.model.config.max_len, None, artifact)
                 for e in examples]
    code = artifact.code_of
    return HeadData(examples, torch.from_numpy(states), torch.from_numpy(user_vectors(artifact, histories)),
                    torch.tensor([code[e.target.item_id] - 1 for e in examples]))


def _window_states(window: list[Interaction], cuts: list[int], ds: Dataset, engine: Engine,
                   cache: BatchCache) -> np.ndarray:
    """The direct states (len(cuts), hidden) of the window's cuts, one forward pass, cached per window."""
    lines = list(UserHistory.of_items([(x.item_id, x.rating, x.timestamp) for x in window], ds.catalog).lines)
    key = [repr(line) for line in lines] + [",".join(map(str, cuts))]
    return cache.get_or_compute(key, lambda _: engine.direct_states_of_cuts([lines], [cuts])[0])


def head_ranking(data: HeadData, rows: np.ndarray, item_ids: list[str], head: nn.Module | None, use: str,
                 desc: str = "validating head") -> RankingResult:
    """The examples of `data` ranked by s alone (`head` None), s + f(h) (`use` "residual") or f(h) alone."""
    with torch.inference_mode():
        users = data.s_vectors if head is None else (
            data.s_vectors + head(data.states) if use == "residual" else head(data.states))
    return rank_examples(_FixedVectors(data.examples, users.numpy(), rows), data.examples, item_ids, desc=desc)


def evaluate_head(data: HeadData, rows: np.ndarray, item_ids: list[str], head: nn.Module | None,
                  use: str) -> dict[str, float]:
    result = head_ranking(data, rows, item_ids, head, use)
    return {k: v for k, v in mean_metrics(result.per_query()).items() if k in ("HR@10", "NDCG@10", "MRR")}


def fit_head(config: HeadTraining, seed: int, head: nn.Module, data: dict[str, HeadData], rows: np.ndarray,
             item_ids: list[str], use: str) -> dict[str, float]:
    """Train `head` (its parameters only) with early stopping; it ends with its best validation weights, which
    may be its initial ones (epoch 0: the served head starts at zero, i.e. s alone)."""
    table = torch.from_numpy(rows)
    warm_mask = torch.zeros(len(rows), dtype=torch.bool)
    train = data["training"]
    warm_mask[train.targets.unique()] = True
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=config.head_weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = {**evaluate_head(data["validation"], rows, item_ids, head, use), "epoch": 0}
    best_state, bad = {k: v.clone() for k, v in head.state_dict().items()}, 0
    for epoch in range(1, config.head_epochs + 1):
        head.train()
        order = torch.randperm(len(train.targets), generator=generator)
        for first in range(0, len(order), BATCH):
            batch = order[first : first + BATCH]
            users = head(train.states[batch]) + (train.s_vectors[batch] if use == "residual" else 0)
            logits = scores(users, table).masked_fill(~warm_mask, float("-inf"))
            loss = F.cross_entropy(logits, train.targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        head.eval()
        metrics = evaluate_head(data["validation"], rows, item_ids, head, use)
        if metrics["NDCG@10"] > best["NDCG@10"]:
            best, best_state, bad = {**metrics, "epoch": epoch}, {k: v.clone() for k, v in head.state_dict().items()}, 0
        else:
            bad += 1
        tqdm.write(f"head ({use}) epoch {epoch}: valid NDCG@10 {metrics['NDCG@10']:.4f} (best {best['NDCG@10']:.4f})")
        if bad >= 3:
            break
    head.load_state_dict(best_state)
    return best
