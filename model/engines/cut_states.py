"""`direct` user vectors of every cut of a history window from one forward pass (DESIGN: docs/design.md section 2).

The `direct` vector of a history is the final hidden state of the last token of the chat
[user: `user_prompt(lines)`][assistant: `<answer>`]. The user prompt is the instruction followed by the history
lines and nothing after the last one, so the rendered prompt of a cut (the first k lines of a window) is a textual
prefix of the window's, and only the closing of the turn (end of user turn, assistant header, `<answer>`) differs.

The trick: one causal forward over the window's tokens fills a KV cache; then one forward feeds, in a single row
per window, one copy of the closing tokens per cut, with a 4D attention mask in which the closing of cut k sees
the cache up to the end of line k and its own earlier closing tokens only (nothing of the other closings, nothing
after line k), and explicit position ids (the closing of cut k continues at the position where line k ends).
Every closing therefore computes exactly what a full pass over the cut's own prompt would: a window with J cuts
costs (window + J x closing) tokens instead of J whole prompts, and the cache is never copied or cropped.

This is exact when the token ids of the rendered cut-k text are (the window's ids up to the end of line k) +
(the closing's ids). `plan_window` checks that per cut; a cut that fails the check (a BPE merge across the
boundary) is left to the caller for a plain full pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from model.prompts import ANSWER_MARKER, MAX_HISTORY_LINES, HistoryLine, render_chat, user_prompt


@dataclass
class WindowPlan:
    """One window: its token ids, the closing's ids, and per cut the window prefix length (None = full pass)."""

    window_ids: list[int]
    """Ids of the rendered window up to the end of its last line (system turn, user header, prompt; no closing)."""
    closing_ids: list[int]
    """Ids of everything after the prompt: end of the user turn, the assistant header, `<answer>`."""
    prefix_lengths: list[int | None]
    """Per cut: how many of `window_ids` its closing attends to, or None when the boundary check failed."""

    @property
    def shortcut(self) -> list[int]:
        """Indices of the cuts computed by the shared forward."""
        return [j for j, m in enumerate(self.prefix_lengths) if m is not None]


def cut_prompt(history: Sequence[HistoryLine], k: int) -> str:
    """The user prompt of the first k lines of a window."""
    return user_prompt(history[:k])


def boundary_matches(cut_ids: Sequence[int], window_ids: Sequence[int], closing_ids: Sequence[int]) -> int | None:
    """How many window ids the cut's ids start with when they are exactly (window ids up to some m) + (closing
    ids), else None (the tokenizer merged across the end of the line, or the template did something else)."""
    m = len(cut_ids) - len(closing_ids)
    if m <= 0 or m > len(window_ids):
        return None
    if list(cut_ids[m:]) != list(closing_ids) or list(cut_ids[:m]) != list(window_ids[:m]):
        return None
    return m


def plan_window(tokenizer: PreTrainedTokenizerBase, history: Sequence[HistoryLine], cuts: Sequence[int]) -> WindowPlan:
    """Tokenize a window and check every cut's token boundary (cuts are line counts 1..len(history))."""
    n = len(history)
    if not 1 <= n <= MAX_HISTORY_LINES:
        raise ValueError(f"a window holds 1..{MAX_HISTORY_LINES} lines, got {n}")
    bad = [k for k in cuts if not 1 <= k <= n]
    if bad:
        raise ValueError(f"cuts must be line counts in 1..{n}, got {bad}")

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt = user_prompt(history)
    rendered = render_chat(tokenizer, prompt, ANSWER_MARKER)
    at = rendered.find(prompt)
    if at < 0:  # the template rewrote the prompt: no shared prefix to rely on
        return WindowPlan([], [], [None] * len(cuts))
    window_ids, closing_ids = ids(rendered[: at + len(prompt)]), ids(rendered[at + len(prompt) :])
    lengths = [boundary_matches(ids(render_chat(tokenizer, cut_prompt(history, k), ANSWER_MARKER)), window_ids,
                                closing_ids) for k in cuts]
    return WindowPlan(window_ids, closing_ids, lengths)


def shared_forward(decoder: torch.nn.Module, plans: Sequence[WindowPlan], pad_id: int, hidden_size: int
                   ) -> list[np.ndarray]:
    """Two forwards for several windows at once; per plan, the final hidden states (len(plan.shortcut), hidden)
    of its shortcut cuts in `plan.shortcut` order (plans without one get an empty array). Call it under
    `torch.inference_mode()`.

    1. The windows, right-padded, plain causal attention (no mask: the fast path), with a KV cache. Window tokens
       past a window's longest cut are dropped (nothing reads them); padding sits after every real token, so no
       real token sees it.
    2. Per window one row of all its cuts' closings (cut j at columns j*C..j*C+C-1, positions continuing at the
       end of its line), attending to the cache through a 4D mask: the cache up to the end of the cut's line and
       its own closing, causally. Padding columns see only themselves.
    """
    out = [np.zeros((0, hidden_size), dtype=np.float32) for _ in plans]
    rows = [p for p, plan in enumerate(plans) if plan.shortcut]
    if not rows:
        return out
    param = next(decoder.parameters())
    lengths = [[plans[p].prefix_lengths[j] for j in plans[p].shortcut] for p in rows]
    closing = plans[rows[0]].closing_ids
    if any(plans[p].closing_ids != closing for p in rows):
        raise ValueError("windows of one forward must share their closing tokens")
    close, batch = len(closing), len(rows)
    width = max(max(m) for m in lengths)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    for b, (p, m) in enumerate(zip(rows, lengths, strict=True)):
        ids[b, : max(m)] = torch.tensor(plans[p].window_ids[: max(m)])
    cache = decoder(input_ids=ids.to(param.device), position_ids=torch.arange(width, device=param.device)[None]
                    .expand(batch, -1), use_cache=True).past_key_values

    queries = close * max(len(m) for m in lengths)
    feed = torch.full((batch, queries), pad_id, dtype=torch.long)
    positions = torch.zeros((batch, queries), dtype=torch.long)
    allowed = torch.zeros((batch, queries, width + queries), dtype=torch.bool)
    allowed[:, torch.arange(queries), width + torch.arange(queries)] = True
    causal = torch.ones(close, close, dtype=torch.bool).tril()
    for b, m in enumerate(lengths):
        for j, prefix in enumerate(m):
            block = slice(j * close, (j + 1) * close)
            feed[b, block] = torch.tensor(closing)
            positions[b, block] = torch.arange(prefix, prefix + close)
            allowed[b, block, :prefix] = True
            allowed[b, block, width + j * close : width + (j + 1) * close] = causal
    mask = torch.zeros(allowed.shape, dtype=param.dtype).masked_fill_(~allowed, torch.finfo(param.dtype).min)
    hidden = decoder(input_ids=feed.to(param.device), attention_mask=mask[:, None].to(param.device),
                     position_ids=positions.to(param.device), past_key_values=cache, use_cache=True).last_hidden_state
    for b, (p, m) in enumerate(zip(rows, lengths, strict=True)):
        out[p] = hidden[b, [(j + 1) * close - 1 for j in range(len(m))]].float().cpu().numpy()
    return out
