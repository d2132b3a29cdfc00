"""Teacher forcing of many cuts of one history window in one forward pass, for reasoning SFT
(`trainer.train.reasoning_sft`).

A sample is [user: user prompt of the first k lines of a window][assistant: rationale + `<answer>`], the loss on the
assistant tokens only. The user prompt of a cut is a textual prefix of the window's prompt (docs/design.md section
2), so one row holds the window's tokens once and then, per cut, the tail of its own chat (end of the user turn,
assistant header, assistant text), with a 4D attention mask in which cut k's tail sees the window only up to the end
of line k plus its own earlier tail tokens, at the positions a full pass over its own chat gives it. Every tail
computes exactly what a full pass would (the tests check the loss against separate passes), while a window of J
cuts costs (window + J x tail) tokens instead of J whole chats: the same trick as `model.engines.cut_states` (inference
there), here with gradients and a tail per cut. A cut whose tokens are not (window ids up to line k) + (tail ids) --
a BPE merge across the boundary -- is skipped and counted. The reasoning supervised this way follows R2ec ("Towards
Large Recommender Models with Reasoning"): analysis first, the state at `<answer>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from model.engines.cut_states import boundary_matches, cut_prompt
from model.prompts import MAX_HISTORY_LINES, HistoryLine, render_chat, user_prompt


@dataclass(frozen=True)
class WindowSample:
    """A history window (oldest first, at most `MAX_HISTORY_LINES` lines) and, per cut (a line count k), the
    assistant text that follows the user prompt of the window's first k lines."""

    lines: tuple[HistoryLine, ...]
    cuts: tuple[int, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class PackedRow:
    """One window packed: token ids, position ids, what each tail may see, and the supervised tokens."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]
    window: int
    """How many of `ids` are the window's tokens (the rest are tails)."""
    tails: tuple[tuple[int, int, int], ...]
    """Per packed cut: (start in `ids`, length, how many window tokens it sees)."""
    targets: tuple[tuple[int, int], ...]
    """(index in `ids` whose logits predict, the token id predicted): every assistant token of every tail."""
    packed_cuts: tuple[int, ...]
    """Indices (into the sample's cuts) of the cuts packed, in the order of `tails`; the others were left out
    because their tokens did not split at the window boundary."""
    skipped: int
    """Cuts left out."""


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pack_window(tokenizer: PreTrainedTokenizerBase, sample: WindowSample) -> PackedRow:
    """The row of one window sample (see the module docstring)."""
    lines, n = sample.lines, len(sample.lines)
    if not 1 <= n <= MAX_HISTORY_LINES:
        raise ValueError(f"a window holds 1..{MAX_HISTORY_LINES} lines, got {n}")
    if len(sample.cuts) != len(sample.texts) or any(not 1 <= k <= n for k in sample.cuts):
        raise ValueError("one assistant text per cut, and cuts are line counts in 1..len(lines)")
    prompt = user_prompt(lines)
    rendered = render_chat(tokenizer, prompt)
    at = rendered.find(prompt)
    if at < 0:
        raise ValueError("the chat template rewrites the user prompt: windows cannot share it")
    window_ids = _ids(tokenizer, rendered[: at + len(prompt)])
    plans = []
    for k, text in zip(sample.cuts, sample.texts, strict=True):
        head = render_chat(tokenizer, cut_prompt(lines, k))
        cut_ids, head_ids = _ids(tokenizer, head + text), _ids(tokenizer, head)
        split = head.rfind(cut_prompt(lines, k)) + len(cut_prompt(lines, k))
        tail = _ids(tokenizer, head[split:] + text)
        seen = boundary_matches(cut_ids, window_ids, tail)
        if seen is None or cut_ids[: len(head_ids)] != head_ids or len(cut_ids) == len(head_ids):
            plans.append(None)
            continue
        plans.append((tail, seen, len(head_ids) - seen))
    width = max((plan[1] for plan in plans if plan is not None), default=0)
    ids, positions = list(window_ids[:width]), list(range(width))
    tails, targets, packed = [], [], []
    for j, plan in enumerate(plans):
        if plan is None:
            continue
        packed.append(j)
        tail, seen, header = plan
        start = len(ids)
        ids += tail
        positions += range(seen, seen + len(tail))
        tails.append((start, len(tail), seen))
        targets += [(start + i - 1, tail[i]) for i in range(header, len(tail))]
    return PackedRow(tuple(ids), tuple(positions), width, tuple(tails), tuple(targets), tuple(packed),
                     sum(plan is None for plan in plans))


def batch_tensors(rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, position ids, additive 4D attention mask (B, 1, L, L)) of right-padded rows. Window tokens attend
    causally among themselves; a tail attends to its visible window prefix and causally to itself; padding only
    to itself."""
    length = max(len(row.ids) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1)
    for b, row in enumerate(rows):
        ids[b, : len(row.ids)] = torch.tensor(row.ids)
        positions[b, : len(row.ids)] = torch.tensor(row.positions)
        allowed[b, : row.window, : row.window] = torch.ones(row.window, row.window, dtype=torch.bool).tril()
        for start, size, seen in row.tails:
            allowed[b, start : start + size, :seen] = True
            allowed[b, start : start + size, start : start + size] = torch.ones(size, size, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids, positions, mask[:, None]


def _packed_hidden(model: torch.nn.Module, rows: Sequence[PackedRow], pad_id: int) -> torch.Tensor:
    """Final hidden states (B, L, hidden) of right-padded packed rows, one forward of the decoder."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(base.parameters()).device
    ids, positions, mask = batch_tensors(rows, pad_id)
    return base.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), use_cache=False).last_hidden_state


def packed_loss(model: torch.nn.Module, rows: Sequence[PackedRow], pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over every assistant token of `rows` with `model` (a causal LM, maybe wrapped by peft)
    in one forward; also the number of tokens it averages over."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = _packed_hidden(model, rows, pad_id)
    device = hidden.device
    rows_at = torch.tensor([b for b, row in enumerate(rows) for _ in row.targets], device=device)
    cols_at = torch.tensor([i for row in rows for i, _ in row.targets], device=device)
    labels = torch.tensor([t for row in rows for _, t in row.targets], device=device)
    logits = base.get_output_embeddings()(hidden[rows_at, cols_at]).float()
    return F.cross_entropy(logits, labels), len(labels)


def packed_states(model: torch.nn.Module, row: PackedRow, pad_id: int) -> np.ndarray:
    """The final hidden state at the last token of each tail of `row` (after its assistant text: with rationale +
    `<answer>`, the state a reasoning head reads), (len(row.tails), hidden) in `row.packed_cuts` order; no
    gradients."""
    with torch.inference_mode():
        hidden = _packed_hidden(model, [row], pad_id)[0]
        return hidden[[start + size - 1 for start, size, _ in row.tails]].float().cpu().numpy()
