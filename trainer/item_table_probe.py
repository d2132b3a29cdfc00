"""How far can any user vector go over a fixed item table? (`reasonrec probe-items`)

A diagnostic for the user-side recipe of `trainer.contrastive` (`frozen_items`): there the items keep one
model's vectors (the index `reasonrec index` built) and only the user vector moves. Here each seeded test user
gets a free vector, fitted by Adam to the loss of that recipe (full-softmax cross-entropy of cosine / temperature
over every indexed item, centered as the index stores them) with the user's own most recent training items as
the positives; then the user's held-out item is ranked with that vector, history excluded, with and without the
served popularity prior (`indexer.prior`). A next-item user tower sees no more of a user than these items, so if
a vector fitted to them ranks the held-out item no better than popularity, the item table, not the user side, is
what caps the recipe. It is a reference point, not a bound: a tower trained across users could in principle
generalise in ways a per-user fit does not.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from indexer.store import ItemStore
from trainer.evaluate import rank_examples
from trainer.machine import machine_line
from trainer.metrics import mean_metrics
from trainer.protocols import SplitConfig
from trainer.rankers import PopularityRanker
from trainer.report import shown_path
from trainer.splits import Example, sample_examples


@dataclass
class ProbeConfig(SplitConfig):
    """What `reasonrec probe-items` fits (defaults: the 300 seeded test users of the ML-1M tables)."""

    index_dir: Path | None = None
    """The item table: an index folder (`reasonrec index` prints it)."""
    users: int = 300
    """Seeded test users (the evaluation harness's sample)."""
    recent: int = 20
    """Positives: each user's N most recent training items (the user prompt shows 20)."""
    temperature: float = 0.05
    """Softmax temperature on cosines (the training recipe's)."""
    steps: int = 300
    """Adam steps of the fit."""
    lr: float = 0.05
    """Adam learning rate."""
    prior: float = 0.2
    """Weight w of the popularity prior cosine + w log(1 + training count) in the second ranking."""
    seed: int = 0
    """Seed of the user sample."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.users, self.recent, self.steps) < 1 or self.temperature <= 0 or self.lr <= 0 or self.prior < 0:
            raise ValueError("--users, --recent and --steps must be >= 1, --temperature and --lr > 0, --prior >= 0")


class _VectorRanker:
    """Scores of fixed user vectors against the table (centered cosine), plus a weighted log-popularity."""

    batch_size = 64

    def __init__(self, name: str, users: dict[str, torch.Tensor], table: torch.Tensor, prior: torch.Tensor) -> None:
        self.name, self.users, self.table, self.prior = name, users, table, prior

    def scores(self, examples: list[Example]) -> np.ndarray:
        users = F.normalize(torch.stack([self.users[e.user_id] for e in examples]), dim=-1)
        return (users @ self.table.T + self.prior[None, :]).numpy()


def probe_item_table(config: ProbeConfig) -> dict:
    """Fit the users' vectors and rank their held-out items; returns the report (also its JSON)."""
    if config.index_dir is None:
        raise ValueError("--index-dir is required: the index whose item vectors are probed")
    ds, split = config.load()
    store = ItemStore.load(config.index_dir)
    item_ids = [item_id for item_id in ds.catalog.ids() if store.get(item_id) is not None]
    code = {item_id: c for c, item_id in enumerate(item_ids)}
    table = torch.as_tensor(store.vectors_of(item_ids), dtype=torch.float32)  # centered unit rows
    examples = sample_examples(split.test, config.users, config.seed)
    positives = [[code[x.item_id] for x in split.train[e.user_id] if x.item_id in code][-config.recent:]
                 for e in examples]
    rows = torch.tensor([r for r, items in enumerate(positives) for _ in items])
    columns = torch.tensor([c for items in positives for c in items])
    mean = torch.zeros(len(examples), table.shape[1]).index_add_(0, rows, table[columns])
    vectors = torch.nn.Parameter(mean.clone())
    optimizer = torch.optim.Adam([vectors], lr=config.lr)
    start = time.perf_counter()
    losses = []
    for _ in tqdm(range(config.steps), desc="fitting user vectors", unit="step"):
        logits = F.normalize(vectors, dim=-1) @ table.T / config.temperature
        loss = -logits.log_softmax(dim=-1)[rows, columns].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    fit_seconds = time.perf_counter() - start
    counts = torch.as_tensor(PopularityRanker(item_ids, split.train).row, dtype=torch.float32)
    log_counts = torch.log1p(counts)
    rankings = {
        "popularity (a zero vector + the prior with weight 1)": (torch.zeros_like(mean), log_counts),
        "mean of the recent items": (mean, torch.zeros(len(item_ids))),
        f"mean of the recent items + prior {config.prior}": (mean, config.prior * log_counts),
        "fitted vector": (vectors.detach(), torch.zeros(len(item_ids))),
        f"fitted vector + prior {config.prior}": (vectors.detach(), config.prior * log_counts),
    }
    metrics = {}
    for name, (users, prior) in rankings.items():
        by_user = {e.user_id: users[i] for i, e in enumerate(examples)}
        result = rank_examples(_VectorRanker(name, by_user, table, prior), examples, item_ids, desc=name)
        metrics[name] = {k: v for k, v in mean_metrics(result.per_query()).items() if k in ("HR@10", "NDCG@10")}
    uniform = float(np.log(len(item_ids)))
    return {"config": {k: shown_path(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            "items": len(item_ids), "users": len(examples), "fit_seconds": round(fit_seconds, 1),
            "loss_first": losses[0], "loss_last": losses[-1], "loss_uniform": uniform, "metrics": metrics,
            "machine": machine_line(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def write_probe_report(report: dict, out: Path, command: str) -> list[Path]:
    """`out`.json and `out`.md: the table, what was fitted, the command and the machine."""
    config = report["config"]
    lines = [f"# Item-table probe: {config['dataset']} {config['protocol']}", "",
             f"- **command**: `{command}`",
             f"- **item table**: `{config['index_dir']}` ({report['items']} items)",
             f"- **users**: {report['users']} seeded test users (seed {config['seed']}); positives: their "
             f"{config['recent']} most recent training items; held-out item ranked with history excluded",
             f"- **fit**: {config['steps']} Adam steps (lr {config['lr']}) of full-softmax cross-entropy, temperature "
             f"{config['temperature']}: loss {report['loss_first']:.3f} -> {report['loss_last']:.3f} (uniform over the "
             f"table: {report['loss_uniform']:.3f}), {report['fit_seconds']} s",
             f"- **machine**: {report['machine']}; **date**: {report['date']}", "",
             "| user vector | HR@10 | NDCG@10 |", "|---|---|---|"]
    lines += [f"| {name} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} |" for name, m in report["metrics"].items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".json"), out.with_suffix(".md")]
    paths[0].write_text(json.dumps({**report, "command": command}, indent=1), encoding="utf-8")
    paths[1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths
