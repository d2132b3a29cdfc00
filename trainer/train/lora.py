"""The LoRA settings of the jobs that adapt the language model (LoRA: Hu et al., "LoRA: Low-Rank Adaptation of
Large Language Models", ICLR 2022): contrastive alignment (`trainer.train.contrastive`) and reasoning SFT
(`trainer.train.reasoning_sft`). Each job's config inherits them and sets its own defaults.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from indexer.core.durable import replace_text

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of a Llama decoder layer."""


@dataclass
class LoraSettings:
    """The base model and where LoRA goes on it."""

    model: str = "smollm2"
    """Base LLM: smollm2, tiny or a local Hugging Face model folder."""
    lora_r: int = 8
    """LoRA rank (dimensions of each low-rank update)."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout probability on the LoRA input."""
    lora_modules: tuple[str, ...] = LINEAR_MODULES
    """Names of the linear layers that get a LoRA update."""
    lora_top_layers: int = 4
    """Number of top decoder layers that get LoRA; 0 = all layers. The layers below run without autograd records,
    so a step costs about a no-grad forward plus this many layers' training."""

    def check_lora(self) -> None:
        """Errors that name the flag (call from the config's `__post_init__`)."""
        self.lora_modules = tuple(self.lora_modules)
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError("--lora-r and --lora-alpha must be >= 1")
        if not 0 <= self.lora_dropout < 1 or self.lora_top_layers < 0:
            raise ValueError("--lora-dropout must be in [0, 1) and --lora-top-layers >= 0")


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """`model` wrapped by peft with LoRA on the top `lora_top_layers` layers (all when 0 or more than it has)."""
    from peft import LoraConfig, get_peft_model

    layers, top = model.config.num_hidden_layers, settings.lora_top_layers
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=list(settings.lora_modules),
                      layers_to_transform=list(range(layers - top, layers)) if 0 < top < layers else None)
    return get_peft_model(model, lora)


def save_adapter(model: torch.nn.Module, folder: Path, model_id: str, adapters: Sequence[str] | None = None) -> None:
    """The peft adapter(s) of `model` in `folder` (`adapters`: only these, e.g. the trained one beside a frozen
    reference copy), its `base_model_name_or_path` naming the base model (peft records the folder it was loaded
    from, which differs between machines)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, selected_adapters=list(adapters) if adapters is not None else None)
    config_path = folder / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    replace_text(config_path, json.dumps({**adapter_config, "base_model_name_or_path": model_id}, indent=2))
