"""Cached activations below the LoRA layers, so top-layer LoRA training pays the frozen layers' forward once per
prompt instead of once per step (the `sample_pool` mode of `trainer.train.contrastive.job`).

With LoRA only on the top N decoder layers, the hidden states that enter the first LoRA layer do not depend on
the adapter: they are a fixed function of the prompt. So each prompt (a pooled training user, a validation user,
an item) runs through the frozen layers once without gradients; its hidden states are kept in memory and on disk
(one float32 `.npy` per prompt, named by a hash of the model, the layer and the text, so an interrupted run
resumes), and every later use runs only the top N layers on them. Batches are left-padded with the same
attention mask and position ids as `TransformersEngine.answer_states`, so the vectors are the full model's
(checked against it in the tests). It follows no paper: an exact precomputation that LoRA (Hu et al., ICLR 2022)
allows because it freezes the base weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from model.engines.transformers_engine import TransformersEngine, left_padded_positions
from model.prompts import ANSWER_MARKER


class LowerLayerCache:
    """`answer_states`, `embed_direct` and `embed_items` of a `TransformersEngine` computed from stored states at
    decoder layer `first_trained` (the first layer with LoRA): only layers `first_trained`.. run per call."""

    def __init__(self, engine: TransformersEngine, first_trained: int, folder: Path | None) -> None:
        self.engine, self.first_trained, self.folder = engine, first_trained, folder
        self.decoder = engine.model.get_decoder()
        self.hidden_size, self.batch_size = engine.hidden_size, engine.batch_size
        layers = len(self.decoder.layers)
        if not 0 < first_trained < layers:
            raise ValueError(f"the first LoRA layer must be in 1..{layers - 1} to cache the layers below, "
                             f"got {first_trained}")
        self._namespace = json.dumps({"model": engine.fingerprint.to_json(), "layer": first_trained}, sort_keys=True,
                                     default=str)
        self._states: dict[str, torch.Tensor] = {}
        self.computed = 0
        """Prompts run through the lower layers by this object (the rest came from memory or disk)."""

    def answer_states(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), hidden) differentiable last-token vectors of [user: text][assistant: `<answer>`]."""
        self._fill([text for text in dict.fromkeys(texts) if text not in self._states])
        rows = [self._states[text] for text in texts]
        longest = max(len(row) for row in rows)
        device = self.engine.model.device
        lower = torch.zeros(len(rows), longest, self.hidden_size, device=device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            lower[i, longest - len(row):] = row
            mask[i, longest - len(row):] = 1
        with _only_layers(self.decoder, self.first_trained, None):
            out = self.decoder(inputs_embeds=lower, attention_mask=mask, position_ids=left_padded_positions(mask),
                               use_cache=False)
        return out.last_hidden_state[:, -1]

    def embed_direct(self, texts: Sequence[str]) -> np.ndarray:
        """`TransformersEngine.embed_direct` of `texts` (one batch, no gradients) from the stored states."""
        with torch.no_grad():
            return self.answer_states(texts).float().cpu().numpy()

    def embed_items(self, texts: Sequence[str]) -> np.ndarray:
        """`TransformersEngine.embed_items` of the training model (items are rendered as user prompts are)."""
        return self.embed_direct(texts)

    def _fill(self, texts: list[str]) -> None:
        """Load or compute (in length-sorted engine batches) the lower states of `texts`."""
        missing = []
        for text in texts:
            path = self._path(text)
            if path is not None and path.is_file():
                self._states[text] = torch.as_tensor(np.load(path))
            else:
                missing.append(text)
        missing.sort(key=len)
        for first in range(0, len(missing), self.batch_size):
            chunk = missing[first : first + self.batch_size]
            for text, states in zip(chunk, self._lower(chunk), strict=True):
                self._states[text] = states
                self._save(text, states)
            self.computed += len(chunk)

    def _lower(self, texts: list[str]) -> list[torch.Tensor]:
        """Unpadded hidden states leaving layer `first_trained - 1` of each text (no gradients)."""
        engine = self.engine
        enc = engine.tokenizer([engine.render(text, ANSWER_MARKER) for text in texts], return_tensors="pt",
                               padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"].to(engine.model.device), enc["attention_mask"].to(engine.model.device)
        captured: list[torch.Tensor] = []
        hook = self.decoder.layers[self.first_trained - 1].register_forward_hook(
            lambda _module, _args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            with torch.no_grad(), _only_layers(self.decoder, 0, self.first_trained):
                self.decoder(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                             use_cache=False)
        finally:
            hook.remove()
        return [states[row_mask.bool()].float().cpu() for states, row_mask in zip(captured[0], mask, strict=True)]

    def _path(self, text: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256((self._namespace + chr(0) + text).encode()).hexdigest()[:32]}.npy"

    def _save(self, text: str, states: torch.Tensor) -> None:
        path = self._path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, states.numpy())
        tmp.replace(path)


@contextmanager
def _only_layers(decoder: torch.nn.Module, first: int, end: int | None) -> Iterator[None]:
    """Run `decoder` (a transformers decoder stack with a `layers` ModuleList) with layers first..end-1 only."""
    every = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(every)[first:end])
    try:
        yield
    finally:
        decoder.layers = every
