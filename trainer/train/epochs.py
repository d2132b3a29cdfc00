"""The epoch loop shared by the sequence-model jobs (SASRec+ and the item table): train an epoch, validate, keep the
best model, stop early, and write `resume.pt` after every epoch so that rerunning the same command resumes.

`resume.pt` holds the model, the optimizer, the generator of the user order, torch's random state and the
progress (`EpochState`), with the settings it was made with: a rerun with other settings is refused
(`trainer.data.protocols.check_same_run`), except for the stopping limits named in `ignore`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from model.networks.sasrec import PAD, right_padded
from trainer.data.protocols import check_same_run

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


@dataclass
class EpochState:
    """Training progress that `resume.pt` carries besides the tensors."""

    epoch: int = 0
    best_ndcg: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    seconds: float = 0.0
    history: list | None = None


@dataclass
class EpochRun:
    """What the loop needs to know about one job's run."""

    folder: Path
    settings: dict
    """The settings that decide the result (compared on resume)."""
    job: str
    """The job's name in messages ("SASRec", "item-table")."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    order: torch.Generator
    ignore: tuple[str, ...] = ()
    """Settings that may change between runs of one folder (stopping limits)."""

    def resume(self) -> EpochState:
        path = self.folder / RESUME_FILE
        if not path.is_file():
            return EpochState()
        saved = torch.load(path, weights_only=True)
        check_same_run(self.folder, saved["config"], self.settings, self.job, ignore=self.ignore)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.order.set_state(saved["order_rng"])
        torch.set_rng_state(saved["torch_rng"])
        log.info("resuming %s after epoch %d", self.folder, saved["state"]["epoch"])
        return EpochState(**saved["state"])

    def save(self, state: EpochState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (RESUME_FILE + ".tmp")
        torch.save({"config": self.settings, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "order_rng": self.order.get_state(), "torch_rng": torch.get_rng_state(), "state": asdict(state)},
                   tmp)
        tmp.replace(self.folder / RESUME_FILE)

    def done(self) -> None:
        """The run has its final artifact: `resume.pt` is no longer needed."""
        (self.folder / RESUME_FILE).unlink(missing_ok=True)


def run_epochs(run: EpochRun, max_epochs: int, patience: int, train_epoch: Callable[[int], float],
               validate: Callable[[], dict[str, float]], save_best: Callable[[EpochState], None]) -> EpochState:
    """Resume, then epochs until `max_epochs` or `patience` epochs without a better validation NDCG@10;
    `save_best` writes the model when it improves (after `validate`, which may switch it to eval mode)."""
    state = run.resume()
    while state.epoch < max_epochs and state.bad_epochs < patience:
        start = time.perf_counter()
        loss = train_epoch(state.epoch + 1)
        metrics = validate()
        state.epoch += 1
        state.seconds += time.perf_counter() - start
        state.history = [*(state.history or []), {"epoch": state.epoch, "loss": loss,
                                                  "seconds": round(state.seconds, 1), **metrics}]
        improved = metrics["NDCG@10"] > state.best_ndcg
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        if improved:
            state.best_ndcg, state.best_epoch = metrics["NDCG@10"], state.epoch
            save_best(state)
        run.save(state)
        tqdm.write(f"epoch {state.epoch}: loss {loss:.4f}, valid NDCG@10 {metrics['NDCG@10']:.4f} HR@10 "
                   f"{metrics['HR@10']:.4f} (best {state.best_ndcg:.4f} at epoch {state.best_epoch}), "
                   f"{time.perf_counter() - start:.0f} s")
    return state


def softmax_epoch(sequences: list[list[int]], batch_size: int, order: torch.Generator, epoch: int,
                  optimizer: torch.optim.Optimizer,
                  logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """One pass over the users' item-code sequences in a seeded order, next-item full softmax cross-entropy at
    every position (SASRec+'s loss); `logits_of(inputs, real)` gives the logits (real positions x items, column j =
    item code j + 1) of a right-padded batch. Returns the mean loss per batch."""
    permutation = torch.randperm(len(sequences), generator=order).tolist()
    total, steps = 0.0, 0
    for first in tqdm(range(0, len(permutation), batch_size), desc=f"epoch {epoch}", unit="batch", leave=False):
        batch = [sequences[i] for i in permutation[first : first + batch_size]]
        inputs, labels = right_padded([s[:-1] for s in batch]), right_padded([s[1:] for s in batch])
        real = labels != PAD
        loss = F.cross_entropy(logits_of(inputs, real), labels[real] - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + loss.detach().item(), steps + 1
    return total / max(steps, 1)
