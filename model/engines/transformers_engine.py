"""The in-process engine: batched greedy generation up to `<answer>` and user/item vectors with transformers.

Vectors follow docs/design.md section 2: final-layer hidden state (after the final norm) of the last token of the
chat-rendered [user][assistant: ... `<answer>`]. For reasoning, the canonical user vector is that of the
*re-tokenized* text; it is read off the generation's KV cache by feeding only the missing tail of that text
(one token when the model wrote `<answer>` itself, the marker's tokens when the budget ran out), which is exact
when the re-tokenized ids start with the ids already in the cache. When they do not (BPE merges across the
boundary), a fresh full pass is run instead. Batches are left-padded with explicit position ids, so a batch
gives the same results as single calls up to float rounding. The `direct` vectors of many cuts of one history
window share one forward (`direct_states_of_cuts`, `model.engines.cut_states`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.engines.base import Generation, Reasoning, single_token_ids
from model.engines.cut_states import cut_prompt, plan_window, shared_forward
from model.engines.loading import LoadedModel, load_model
from model.prompts import ANSWER_MARKER, HistoryLine, render_chat


@dataclass
class _DecodeState:
    """A finished greedy decode of a batch: the KV cache and what each row fed and generated."""

    past: object
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    fed: list[list[int]]
    generated: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)


class TransformersEngine:
    """Runs a `LoadedModel` in this process; thread-safe (one batch at a time), greedy decoding."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.fingerprint = loaded.fingerprint
        self.reasoning_adapter = loaded.reasoning_adapter
        self.hidden_size = loaded.hidden_size
        self.batch_size = batch_size
        self._decoder = self.model.get_decoder()
        self._lm_head = self.model.get_output_embeddings()
        self._lock = threading.Lock()
        ends = (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._end_ids = {i for i in ends if i is not None}
        self.stats = {"kv_shortcut": 0, "full_pass": 0, "cut_shortcut": 0, "cut_full_pass": 0}

    @contextmanager
    def _scope(self, reasoning: bool) -> Iterator[None]:
        """One batch at a time, without autograd, with the reasoning adapter's LoRA layers on for a reasoning (and
        the state after it) and off for everything else (item vectors, `direct`, ratings)."""
        with self._lock, torch.inference_mode():
            if not (reasoning and self.reasoning_adapter):
                yield
                return
            self.model.base_model.enable_adapter_layers()
            try:
                yield
            finally:
                self.model.base_model.disable_adapter_layers()

    # ---- rendering -------------------------------------------------------------------------------------------

    def render(self, user_text: str, assistant_text: str = "") -> str:
        """The chat template applied to [user][assistant: assistant_text] with no end-of-turn after it."""
        return render_chat(self.tokenizer, user_text, assistant_text)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---- public API ------------------------------------------------------------------------------------------

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        """Greedy reasoning up to `<answer>` (or the budget, then `<answer>` is appended), and the user vector."""
        results: list[Reasoning] = []
        for start in range(0, len(user_texts), self.batch_size):
            results.extend(self._reason_batch(list(user_texts[start : start + self.batch_size]), max_new_tokens))
        return results

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        """User vectors with the assistant turn just `<answer>` (no generation)."""
        return self.assistant_states(user_texts, [ANSWER_MARKER] * len(user_texts))

    def assistant_states(self, user_texts: Sequence[str], assistant_texts: Sequence[str]) -> np.ndarray:
        """The final hidden state at the last token of [user: u][assistant: a] for each pair, no generation: with
        a = a reasoning + `<answer>`, the vector `reason` returns when the model writes that reasoning."""
        return self._last_hidden([self.render(u, a) for u, a in zip(user_texts, assistant_texts, strict=True)])

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        """Item vectors: [user: item prompt][assistant: `<answer>`]."""
        return self._last_hidden([self.render(text, ANSWER_MARKER) for text in item_texts])

    def direct_states_of_cuts(
        self, histories: Sequence[Sequence[HistoryLine]], cuts: Sequence[Sequence[int]], windows_per_pass: int = 4
    ) -> list[np.ndarray]:
        """`direct` vectors of many cuts of each history window: for window i an array (len(cuts[i]), hidden)
        whose row j is `embed_direct([user_prompt(histories[i][:cuts[i][j]])])[0]` (to float rounding).

        The trick (`model.engines.cut_states`; DESIGN: docs/design.md section 2): a cut's prompt is a textual prefix of
        its window's, so one causal forward over the window's tokens fills a KV cache, and one more feeds one copy
        of the turn's closing per cut, each masked to see the cache only up to the end of its line k, at the
        positions a full pass would give it. Windows of similar token length share both forwards
        (`windows_per_pass`, right-padded). A cut whose
        tokens are not (window ids up to line k) + (closing ids) gets a plain full pass instead; `stats` counts
        both kinds (`cut_shortcut`, `cut_full_pass`).
        """
        if len(histories) != len(cuts):
            raise ValueError(f"{len(histories)} histories but {len(cuts)} cut lists")
        plans = [plan_window(self.tokenizer, h, c) for h, c in zip(histories, cuts, strict=True)]
        results = [np.zeros((len(c), self.hidden_size), dtype=np.float32) for c in cuts]
        order = sorted(range(len(plans)), key=lambda i: len(plans[i].window_ids)
                       + len(plans[i].closing_ids) * len(plans[i].shortcut))
        for start in range(0, len(order), max(1, windows_per_pass)):
            chunk = order[start : start + max(1, windows_per_pass)]
            with self._scope(reasoning=False):
                states = shared_forward(self._decoder, [plans[i] for i in chunk], self.tokenizer.pad_token_id,
                                        self.hidden_size)
            for i, rows in zip(chunk, states, strict=True):
                results[i][plans[i].shortcut] = rows
        missing = [(i, j) for i, plan in enumerate(plans) for j, m in enumerate(plan.prefix_lengths) if m is None]
        self.stats["cut_shortcut"] += sum(len(plan.shortcut) for plan in plans)
        self.stats["cut_full_pass"] += len(missing)
        if missing:
            full = self.embed_direct([cut_prompt(histories[i], cuts[i][j]) for i, j in missing])
            for (i, j), vector in zip(missing, full, strict=True):
                results[i][j] = vector
        return results

    def answer_states(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable vectors of [user: text][assistant: `<answer>`] for training (contrastive LoRA): one
        left-padded forward, no KV cache, no lock, no batching; the same vectors `embed_direct` returns."""
        return self._prefill([self.render(text, ANSWER_MARKER) for text in texts], use_cache=False)[0][:, -1]

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]:
        """Continue each assistant turn from its prefix until `stop`, end-of-turn or the budget."""
        results: list[Generation] = []
        rendered = [self.render(u, p) for u, p in zip(user_texts, assistant_prefixes, strict=True)]
        for start in range(0, len(rendered), self.batch_size):
            with self._scope(reasoning=False):
                state = self._decode(rendered[start : start + self.batch_size], max_new_tokens, stop)
            results.extend(
                Generation(text.split(stop, 1)[0], len(gen), stopped)
                for text, gen, stopped in zip(state.texts, state.generated, state.stopped, strict=False)
            )
        return results

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray:
        """Next-token probabilities of single-token `choices` after each prefix, renormalized over the choices."""
        choice_ids = single_token_ids(self.tokenizer, choices)
        rendered = [self.render(u, p) for u, p in zip(user_texts, assistant_prefixes, strict=True)]
        rows = []
        for start in range(0, len(rendered), self.batch_size):
            with self._scope(reasoning=False):
                hidden = self._prefill(rendered[start : start + self.batch_size])[0]
                logits = self._lm_head(hidden[:, -1]).float()
            rows.append(torch.softmax(logits[:, choice_ids], dim=-1).numpy())
        return np.concatenate(rows).astype(np.float32)

    # ---- internals -------------------------------------------------------------------------------------------

    def _prefill(self, rendered: list[str], use_cache: bool = True
                 ) -> tuple[torch.Tensor, object, torch.Tensor, list[list[int]]]:
        """Left-padded forward of a batch: (final hidden states, KV cache, attention mask, unpadded ids)."""
        enc = self.tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"].to(self.model.device), enc["attention_mask"].to(self.model.device)
        out = self._decoder(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                            use_cache=use_cache)
        unpadded = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask, strict=False)]
        return out.last_hidden_state, out.past_key_values, mask, unpadded

    def _last_hidden(self, rendered: list[str], reasoning: bool = False) -> np.ndarray:
        """Last-token final hidden state of each text (`reasoning`: with the reasoning adapter on); batches are
        formed from similar lengths."""
        order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))
        vectors = np.zeros((len(rendered), self.hidden_size), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with self._scope(reasoning):
                hidden = self._prefill([rendered[i] for i in chunk])[0]
            vectors[chunk] = hidden[:, -1].float().cpu().numpy()
        return vectors

    def _decode(self, rendered: list[str], max_new_tokens: int, stop: str) -> _DecodeState:
        """Greedy decode of a batch until every row has produced `stop`, end-of-turn, or `max_new_tokens` tokens.

        A finished row is fed padding (masked out) while the others go on, so its KV cache stays exactly its own
        prompt plus the tokens it fed; `fed` records those ids per row (a row's last generated token is not fed).
        """
        hidden, past, mask, prompt_ids = self._prefill(rendered)
        n = len(rendered)
        state = _DecodeState(
            past, mask, mask.sum(-1), fed=prompt_ids,
            generated=[[] for _ in range(n)], texts=[""] * n, stopped=[False] * n,
        )
        done = [max_new_tokens <= 0] * n
        logits = self._lm_head(hidden[:, -1])
        for _ in range(max_new_tokens):
            for i, token in enumerate(logits.argmax(-1).tolist()):
                done[i] = done[i] or self._accept_token(state, i, token, max_new_tokens, stop)
            if all(done):
                break
            logits = self._feed_step(state, done)
        return state

    # ---- decode steps (also the hooks of `model.engines.continuous`, which admits and retires rows between steps)

    def _accept_token(self, state: _DecodeState, i: int, token: int, max_new_tokens: int, stop: str) -> bool:
        """Record row i's greedy `token`; True when the row is done (end-of-turn, `stop` appeared, budget spent)."""
        if token in self._end_ids:
            return True
        state.generated[i].append(token)
        state.texts[i] = self.tokenizer.decode(state.generated[i], skip_special_tokens=False)
        if stop in state.texts[i]:
            state.stopped[i] = True
            return True
        return len(state.generated[i]) >= max_new_tokens

    def _feed_step(self, state: _DecodeState, done: list[bool]) -> torch.Tensor:
        """Feed each unfinished row its last generated token (finished rows get masked padding); next logits."""
        n = len(done)
        feed = torch.tensor([[self.tokenizer.pad_token_id if done[i] else state.generated[i][-1]] for i in range(n)])
        feed_mask = torch.tensor([[0 if done[i] else 1] for i in range(n)])
        for i in range(n):
            if not done[i]:
                state.fed[i].append(state.generated[i][-1])
        state.attention_mask = torch.cat([state.attention_mask, feed_mask], dim=-1)
        out = self._decoder(
            input_ids=feed, attention_mask=state.attention_mask, position_ids=state.lengths[:, None].clone(),
            past_key_values=state.past, use_cache=True,
        )
        state.lengths = state.lengths + feed_mask[:, 0]
        state.past = out.past_key_values
        return self._lm_head(out.last_hidden_state[:, -1])

    def _reason_batch(self, user_texts: list[str], max_new_tokens: int) -> list[Reasoning]:
        rendered = [self.render(text) for text in user_texts]
        with self._scope(reasoning=True):
            state = self._decode(rendered, max_new_tokens, ANSWER_MARKER)
        return self._finish_reasoning(user_texts, state)

    def _finish_reasoning(self, user_texts: Sequence[str], state: _DecodeState) -> list[Reasoning]:
        """Reasonings and user vectors of decoded rows (row i of `state` is `user_texts[i]`'s decode)."""
        with self._scope(reasoning=True):
            reasonings = [text.split(ANSWER_MARKER, 1)[0] for text in state.texts]
            canonical = [self._ids(self.render(u, r + ANSWER_MARKER))
                         for u, r in zip(user_texts, reasonings, strict=False)]
            tails: list[list[int] | None] = []
            for fed, ids in zip(state.fed, canonical, strict=False):
                exact = len(ids) > len(fed) and ids[: len(fed)] == fed
                tails.append(ids[len(fed) :] if exact else None)
            vectors = self._vectors_from_cache(state, tails)
        self.stats["kv_shortcut"] += sum(t is not None for t in tails)
        missing = [i for i, tail in enumerate(tails) if tail is None]
        if missing:
            self.stats["full_pass"] += len(missing)
            full = self._last_hidden([self.render(user_texts[i], reasonings[i] + ANSWER_MARKER) for i in missing],
                                     reasoning=True)
            vectors[missing] = full
        return [
            Reasoning(text, vectors[i], len(state.generated[i]), state.stopped[i])
            for i, text in enumerate(reasonings)
        ]

    def _vectors_from_cache(self, state: _DecodeState, tails: list[list[int] | None]) -> np.ndarray:
        """Feed each row's missing tail (right-padded) on top of its KV cache; read its last real position."""
        vectors = np.zeros((len(tails), self.hidden_size), dtype=np.float32)
        rows = [i for i, tail in enumerate(tails) if tail]
        if not rows:
            return vectors
        width = max(len(tails[i]) for i in rows)
        pad = self.tokenizer.pad_token_id
        feed = torch.tensor([(tail or [])[:width] + [pad] * (width - len(tail or [])) for tail in tails])
        feed_mask = torch.tensor([[1] * len(tail or []) + [0] * (width - len(tail or [])) for tail in tails])
        mask = torch.cat([state.attention_mask, feed_mask], dim=-1)
        positions = state.lengths[:, None] + torch.arange(width)[None, :]
        out = self._decoder(input_ids=feed, attention_mask=mask, position_ids=positions, past_key_values=state.past,
                            use_cache=True)
        for i in rows:
            vectors[i] = out.last_hidden_state[i, len(tails[i]) - 1].float().numpy()
        return vectors


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: each row's real tokens count from 0 (padding gets 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def load_engine(model: str, adapter: str | Path | None = None, batch_size: int = 8,
                artifacts: Path | None = None, reasoning_adapter: str | Path | None = None) -> TransformersEngine:
    """The in-process engine of `model` (smollm2, tiny or an HF folder) with the LoRA `adapter` merged and the
    `reasoning_adapter` held for reasonings (`model.engines.loading.load_model`): the one loader every command and
    the service use (the service may put it behind `model.engines.batching`, and names its `artifacts` root)."""
    return TransformersEngine(load_model(model, adapter, artifacts, reasoning_adapter), batch_size=batch_size)
