"""The fast engine (the service's default, `REASONREC_ENGINE=fast`): the `Engine` interface over the lean forward
of `model.engines.lean`, one sequence at a time, with `model.engines.transformers_engine` as its parity reference
(the same greedy text, states at cosine >= .999: `tests/model/test_fast_engine.py`, the benchmark
`docs/results/bench_fast_engine.md`).

- **Pinned prefix.** Every rendered user prompt starts with the chat template's system part and
  `USER_INSTRUCTION`: its KV is computed once per weight set and copied in per request. Reuse goes as far as the
  longest common run of *token ids*, so it is exact even where a BPE merge crosses the boundary.
- **Held prefix.** The cache still holds the last sequence fed: a prompt that shares more of its ids (the same
  history asked about another pair of items, `model.preference`) starts from there instead of the pinned prefix.
- **Reasoning state from the generation's cache.** After greedy decoding up to `<answer>` (or the budget), the
  state is that of the re-tokenized [user][assistant: reasoning + `<answer>`] (docs/design.md section 2), fed on
  top of the cache from the longest common prefix of the fed and the canonical ids.
- **Two weight sets, one model.** With a reasoning adapter (`load_model(..., reasoning_adapter=...)`) the
  reasoning and the state after it use the adapter's set, everything else (item vectors, `direct`, ratings) the
  base set; the sets share every tensor the adapter does not touch.
Batches (lists in) are run one sequence after another: the micro-batcher in front of it (`model.engines.batching`)
still drops calls whose deadline passed while queued. A lock makes it thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.engines.base import Generation, Reasoning, single_token_ids
from model.engines.lean import BASE, EXACT, LeanLlama, Precision, common_prefix_length, peft_lora_deltas
from model.engines.loading import LoadedModel, load_model
from model.prompts import ANSWER_MARKER, USER_INSTRUCTION, render_chat

REASONING = "reasoning"
"""The weight set of the reasoning adapter."""


@dataclass
class _Prefix:
    ids: list[int]
    k: torch.Tensor
    v: torch.Tensor


class FastEngine:
    """The `Engine` interface on a `LeanLlama` (see the module docstring)."""

    def __init__(self, loaded: LoadedModel, precision: Precision = EXACT) -> None:
        self.tokenizer = loaded.tokenizer
        self.fingerprint = loaded.fingerprint
        self.reasoning_adapter = loaded.reasoning_adapter
        self.hidden_size = loaded.hidden_size
        self.precision = precision
        model = loaded.model
        if loaded.reasoning_adapter:  # a peft model holding the adapter: its base weights, the adapter's deltas
            deltas = peft_lora_deltas(model)
            model = model.get_base_model()
        self.lean = LeanLlama(model, precision)
        if loaded.reasoning_adapter:
            self.lean.add_lora(REASONING, deltas)
        ends = (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._end_ids = {int(i) for i in ends if i is not None}
        self._lock = threading.Lock()
        self._pinned_ids = self._ids(render_chat(self.tokenizer, USER_INSTRUCTION + "\x00").split("\x00")[0])
        self._pinned: dict[str, _Prefix] = {}
        self._held: tuple[str, list[int]] = (BASE, [])
        """The weight set and the ids whose KV the cache holds at positions 0.. now."""

    @property
    def _reasoning_set(self) -> str:
        return REASONING if self.reasoning_adapter else BASE

    # ---- the Engine protocol ---------------------------------------------------------------------------------

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        """Greedy reasoning up to `<answer>` (or the budget, then `<answer>` is appended), and the user vector."""
        return [self._reason(text, max_new_tokens) for text in user_texts]

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        return self.assistant_states(user_texts, [ANSWER_MARKER] * len(user_texts))

    def assistant_states(self, user_texts: Sequence[str], assistant_texts: Sequence[str]) -> np.ndarray:
        """The base weights' final state at the last token of [user: u][assistant: a] for each pair."""
        return self._states([render_chat(self.tokenizer, u, a)
                             for u, a in zip(user_texts, assistant_texts, strict=True)])

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        return self._states([render_chat(self.tokenizer, text, ANSWER_MARKER) for text in item_texts])

    def generate(self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int,
                 stop: str) -> list[Generation]:
        """Continue each assistant turn (base weights) from its prefix until `stop`, end-of-turn or the budget."""
        out = []
        for user, prefix in zip(user_texts, assistant_prefixes, strict=True):
            with self._lock, torch.inference_mode():
                ids = self._ids(render_chat(self.tokenizer, user, prefix))
                text, generated, stopped, _ = self._decode(ids, max_new_tokens, stop, BASE)
            out.append(Generation(text.split(stop, 1)[0], generated, stopped))
        return out

    def choice_probs(self, user_texts: Sequence[str], assistant_prefixes: Sequence[str],
                     choices: Sequence[str]) -> np.ndarray:
        """Next-token probabilities of single-token `choices` after each prefix, renormalized over the choices."""
        choice_ids = single_token_ids(self.tokenizer, choices)
        rows = []
        for user, prefix in zip(user_texts, assistant_prefixes, strict=True):
            with self._lock, torch.inference_mode():
                hidden = self._prefill(self._ids(render_chat(self.tokenizer, user, prefix)), BASE)
                logits = self.lean.logits(hidden, BASE)
            rows.append(torch.softmax(logits[choice_ids], dim=-1).numpy())
        return np.stack(rows).astype(np.float32)

    # ---- internals -------------------------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _states(self, rendered: list[str]) -> np.ndarray:
        vectors = np.zeros((len(rendered), self.hidden_size), dtype=np.float32)
        for row, text in enumerate(rendered):
            with self._lock, torch.inference_mode():
                vectors[row] = self._prefill(self._ids(text), BASE).numpy()
        return vectors

    def _prefill(self, ids: list[int], weights: str) -> torch.Tensor:
        """Start from the held sequence or the pinned prefix, whichever agrees with `ids` further (at most all
        but the last id), and feed the rest; the final state of the last id."""
        held_weights, held_ids = self._held
        held = min(common_prefix_length(held_ids, ids), len(ids) - 1) if held_weights == weights else 0
        pinned = self._pinned.get(weights)
        if pinned is None:
            self.lean.forward(self._pinned_ids, 0, weights)
            pinned = self._pinned[weights] = _Prefix(self._pinned_ids, *self.lean.snapshot(len(self._pinned_ids)))
            held = 0
        reuse = min(common_prefix_length(pinned.ids, ids), len(ids) - 1)
        if held > reuse:
            reuse = held
        elif reuse:
            self.lean.restore(pinned.k, pinned.v, reuse)
        return self._feed(ids, reuse, weights)

    def _feed(self, ids: list[int], start: int, weights: str) -> torch.Tensor:
        """Feed ids[start:] on top of the cache's first `start` positions (which must hold ids[:start]); the
        final state of the last id. The cache then holds `ids`."""
        self._held = (weights, list(ids[:start]))  # what stays true if the forward fails half-way
        hidden = self.lean.forward(ids[start:], start, weights)
        self._held = (weights, list(ids))
        return hidden

    def _decode(self, ids: list[int], max_new_tokens: int, stop: str, weights: str
                ) -> tuple[str, int, bool, list[int]]:
        """Greedy decode after `ids`: (text, tokens generated, `stop` seen, the ids fed into the cache)."""
        lean = self.lean
        token = int(lean.sets[weights].lm_head.decode(self._prefill(ids, weights)[None]).argmax())
        fed, generated, text, stopped = list(ids), [], "", False
        while len(generated) < max_new_tokens and token not in self._end_ids:
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=False)
            if stop in text:
                stopped = True
                break
            if len(generated) >= max_new_tokens:
                break
            fed.append(token)
            token = lean.step(token, len(fed) - 1, weights)
        self._held = (weights, list(fed))  # steps write only after `ids`: until here `_prefill`'s `ids` hold
        return text, len(generated), stopped, fed

    def _reason(self, user_text: str, max_new_tokens: int) -> Reasoning:
        weights = self._reasoning_set
        with self._lock, torch.inference_mode():
            ids = self._ids(render_chat(self.tokenizer, user_text))
            text, generated, stopped, fed = self._decode(ids, max_new_tokens, ANSWER_MARKER, weights)
            reasoning = text.split(ANSWER_MARKER, 1)[0]
            canonical = self._ids(render_chat(self.tokenizer, user_text, reasoning + ANSWER_MARKER))
            start = min(common_prefix_length(fed, canonical), len(canonical) - 1)
            vector = self._feed(canonical, start, weights).numpy().copy()
        return Reasoning(reasoning, vector, generated, stopped)


def load_fast_engine(model: str, artifacts: Path | None = None, reasoning_adapter: str | Path | None = None,
                     precision: Precision = EXACT) -> FastEngine:
    """The fast engine of `model` (smollm2, tiny or an HF folder) with the `reasoning_adapter` as a second weight
    set (`model.engines.loading.load_model`)."""
    return FastEngine(load_model(model, artifacts=artifacts, reasoning_adapter=reasoning_adapter), precision)
