"""The language model's final hidden state at `<rate>` after the direct rating prompt: the input of the rating
model's optional head (`model.rating.factors`), and, through the output layer, the model's own guided rating
(the expectation over the probabilities of `1`..`5`, as `model.rating.predict_ratings` reads it).

The text is [user: `direct_rating_prompt(history, item)`][assistant: `<rate>`] (docs/design.md section 2's
rendering). The prompt holds the history first and the target item last (`model.prompts`), so every target of
one history shares the tokens up to the end of the instruction. As in `model.engines.cut_states`, one forward serves a
whole group: a single row holds the shared tokens once, then each target's own tokens (item block, end of turn,
`<rate>`), with a 4D attention mask in which each target's tokens see the shared tokens and their own earlier
tokens only, at the positions a full pass over that target's text would give them. A group of J targets costs
(shared + J x own) tokens instead of J whole prompts. Exact when a target's token ids are (shared ids) + (own
ids); a target that fails that check is computed by a plain pass of its own (`stats` counts both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from indexer.core.catalog import Item
from model.prompts import (
    DIRECT_RATING_INSTRUCTION,
    HistoryLine,
    direct_rating_prompt,
    rating_history_block,
    render_chat,
)
from model.rating.guided import RATING_CHOICES

RATE_MARKER = "<rate>"


@dataclass
class RateStates:
    """States at `<rate>` (n, hidden) and the model's probabilities of 1..5 there (n, 5)."""

    states: np.ndarray
    probabilities: np.ndarray

    @property
    def expected(self) -> np.ndarray:
        """The language model's guided direct rating: the expectation over 1..5."""
        return self.probabilities @ np.arange(1, len(RATING_CHOICES) + 1, dtype=np.float64)


@dataclass
class RateStateReader:
    """Reads `RateStates` from an in-process causal LM (`model.engines.loading.LoadedModel`'s model and tokenizer)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_tokens_per_row: int = 2048
    """A group whose row would be longer is cut into several rows (each repeats the shared tokens)."""
    stats: dict[str, int] = field(default_factory=lambda: {"shared": 0, "full_pass": 0})

    def __post_init__(self) -> None:
        ids = [self._ids(c) for c in RATING_CHOICES]
        if any(len(i) != 1 for i in ids):
            raise ValueError("the rating digits are not single tokens for this tokenizer")
        self.choice_ids = [i[0] for i in ids]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def read(self, history: Sequence[HistoryLine], items: Sequence[Item]) -> RateStates:
        """States and probabilities at `<rate>` of every target item of one history (in `items` order)."""
        texts = [render_chat(self.tokenizer, direct_rating_prompt(history, item), RATE_MARKER) for item in items]
        head = rating_history_block(history) + DIRECT_RATING_INSTRUCTION.rstrip()  # whitespace would merge
        shared_text = texts[0][: texts[0].find(head) + len(head)] if texts and head in texts[0] else ""
        shared = self._ids(shared_text) if shared_text else []
        own: list[list[int] | None] = []
        for text in texts:
            ids = self._ids(text)
            fits = bool(shared) and ids[: len(shared)] == shared and len(ids) > len(shared)
            own.append(ids[len(shared):] if fits else None)
        hidden = np.zeros((len(items), self.model.config.hidden_size), dtype=np.float32)
        rows = [j for j, o in enumerate(own) if o is not None]
        for chunk in self._chunks(shared, [own[j] for j in rows], rows):  # type: ignore[misc]
            hidden[chunk[0]] = self._shared_forward(shared, chunk[1])
        for j in (j for j, o in enumerate(own) if o is None):
            hidden[j] = self._shared_forward(self._ids(texts[j])[:-1], [self._ids(texts[j])[-1:]])[0]
        self.stats["shared"] += len(rows)
        self.stats["full_pass"] += len(items) - len(rows)
        return RateStates(hidden, self._probabilities(hidden))

    def _chunks(self, shared: list[int], owns: list[list[int]], rows: list[int]
                ) -> list[tuple[list[int], list[list[int]]]]:
        out: list[tuple[list[int], list[list[int]]]] = []
        length = len(shared)
        for j, ids in zip(rows, owns, strict=True):
            if not out or length + len(ids) > self.max_tokens_per_row:
                out.append(([], []))
                length = len(shared)
            out[-1][0].append(j)
            out[-1][1].append(ids)
            length += len(ids)
        return out

    def _shared_forward(self, shared: list[int], owns: list[list[int]]) -> np.ndarray:
        """Final hidden states (len(owns), hidden) at the last token of each own part, after the shared ids."""
        param = next(self.model.parameters())
        n_shared, total = len(shared), len(shared) + sum(map(len, owns))
        ids = torch.tensor(shared + [t for o in owns for t in o], device=param.device)[None]
        positions = torch.arange(n_shared).tolist()
        allowed = torch.zeros((total, total), dtype=torch.bool)
        allowed[:n_shared, :n_shared] = torch.ones(n_shared, n_shared, dtype=torch.bool).tril()
        ends, start = [], n_shared
        for o in owns:
            block = slice(start, start + len(o))
            allowed[block, :n_shared] = True
            allowed[block, block] = torch.ones(len(o), len(o), dtype=torch.bool).tril()
            positions += range(n_shared, n_shared + len(o))
            start += len(o)
            ends.append(start - 1)
        mask = torch.zeros(allowed.shape, dtype=param.dtype).masked_fill_(~allowed, torch.finfo(param.dtype).min)
        with torch.inference_mode():
            out = self.model.get_decoder()(input_ids=ids, attention_mask=mask[None, None].to(param.device),
                                           position_ids=torch.tensor(positions, device=param.device)[None])
        return out.last_hidden_state[0, ends].float().cpu().numpy()

    def _probabilities(self, hidden: np.ndarray) -> np.ndarray:
        param = next(self.model.parameters())
        with torch.inference_mode():
            logits = self.model.get_output_embeddings()(torch.from_numpy(hidden).to(param.device, param.dtype))
            return torch.softmax(logits[:, self.choice_ids].float(), dim=-1).cpu().numpy()
