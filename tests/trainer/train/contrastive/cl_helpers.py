"""Builders shared by the contrastive-training tests: item tables from rows, the tiny model's run settings."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from trainer.train.contrastive.config import ContrastiveConfig
from trainer.train.contrastive.loss import ItemTable


def unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def table_of(rows: list[list[float]]) -> ItemTable:
    """A table holding `rows` as raw vectors, center zero (so cosines are plain)."""
    table = ItemTable.empty(len(rows), torch.zeros(len(rows[0])))
    table.update(torch.arange(len(rows)), torch.tensor(rows, dtype=torch.float32))
    return table


def tiny_config(data: Path, out: Path, **overrides: object) -> ContrastiveConfig:
    """A fast run of the tiny model (2 layers): LoRA on both, fresh samples every step, 4 item draws."""
    settings: dict = dict(dataset="ml-1m-zip", data_path=data, model="tiny", steps=12, batch_size=8, valid_every=4,
                          valid_users=20, lr=5e-3, warmup_steps=2, item_draws=4, lora_top_layers=0, sample_pool=0,
                          checkpoint_minutes=1e-6, out_dir=out)
    return ContrastiveConfig(**{**settings, **overrides})


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")
