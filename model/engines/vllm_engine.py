"""The vLLM engine: the `model.engines.base.Engine` interface over HTTP to vLLM's OpenAI-compatible servers.

Two server roles, started from the same weights (docs/design.md section 4): a generation server (`/v1/completions`)
and a pooling server (`--runner pooling --convert embed`, LAST pooling, `use_activation: false`) that returns
the final-layer hidden state of the last token, not normalized. Each role may have several replicas
(`model.engines.replicas.ReplicaPool`: least-busy routing, failover, recovery).

Parity with `model.engines.transformers_engine.TransformersEngine` comes from sending the same inputs: prompts are
rendered here with the model's own tokenizer and chat template (`render`, as the transformers engine renders
them), tokenized with `add_special_tokens=False`, and sent as TOKEN IDS; the generated token ids come back
(`return_token_ids`) and are decoded here exactly as the transformers engine decodes them. Generation is
greedy (`temperature: 0`), stops at the stop string (kept in the output, `include_stop_str_in_output`) or at
end-of-turn. The user vector of `reason` is the pooling server's vector of the re-tokenized
[user][assistant: reasoning + `<answer>`], which is the canonical vector of docs/design.md section 2 (vLLM has no
KV-cache shortcut to offer over HTTP, so it is always the full pass).

`choice_probs` is exact: `logprob_token_ids` asks the server for the log-probabilities of the choice tokens
at the next position (log-softmax over the whole vocabulary), which are renormalized over the choices here.

The interface stays synchronous (the gateway calls engines in worker threads; `httpx.Client` is thread-safe
and pools connections), so both engines are interchangeable behind `service.engine_calls`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from indexer.core.fingerprint import ModelFingerprint
from model.engines.base import Generation, Reasoning, single_token_ids
from model.engines.loading import adapter_hash, folder_fingerprint
from model.engines.replicas import ReplicaPool
from model.engines.vllm_launch import LORA_NAME
from model.prompts import ANSWER_MARKER, render_chat

COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
EMBED_CHUNK = 16


@dataclass(frozen=True)
class VllmTimeouts:
    """How long the client waits; `read_s` should match the gateway's request deadline."""

    connect_s: float = 2.0
    """Opening a connection to a replica (past it, the replica is taken out and the next one tried)."""
    read_s: float = 60.0
    """One completions or embeddings call (past it: `ReplicaTimeout`, no retry)."""
    retry_after_s: float = 5.0
    """How long a failed replica stays out before it is probed (GET /health) again."""


@dataclass(frozen=True)
class _Decoded:
    text: str
    """Everything generated (special tokens kept, end-of-turn dropped), stop string included if it came."""
    tokens: int
    stopped: bool


class VllmEngine:
    """Talks to vLLM generation and pooling replicas; thread-safe; see the module docstring."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, fingerprint: ModelFingerprint, hidden_size: int,
        generate_urls: Sequence[str], pool_urls: Sequence[str], timeouts: VllmTimeouts | None = None,
        max_connections: int = 64, api_key: str | None = None, reasoning_adapter: str | None = None,
    ) -> None:
        """`api_key`: sent as `Authorization: Bearer` on every call (the servers' `--api-key` / `VLLM_API_KEY`);
        `reasoning_adapter`: the hash of the adapter the generation servers serve as `LORA_NAME`, asked for by
        every reasoning (ratings and vectors stay the base weights')."""
        timeouts = timeouts or VllmTimeouts()
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.reasoning_adapter = reasoning_adapter
        self.hidden_size = hidden_size
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeouts.read_s, connect=timeouts.connect_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )
        self.generation = ReplicaPool("generation", generate_urls, self.client, retry_after_s=timeouts.retry_after_s)
        self.pooling = ReplicaPool("pooling", pool_urls, self.client, retry_after_s=timeouts.retry_after_s)
        self._end_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}

    @classmethod
    def for_model_folder(
        cls, folder: Path, generate_urls: Sequence[str], pool_urls: Sequence[str], timeouts: VllmTimeouts | None = None,
        api_key: str | None = None, reasoning_adapter: Path | None = None,
    ) -> VllmEngine:
        """The engine for the HF folder the servers were started from (its tokenizer and fingerprint), and the
        reasoning adapter the generation servers were started with (`vllm_launch.server_args`)."""
        config = json.loads((folder / "config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hidden = int(config["hidden_size"])
        return cls(tokenizer, folder_fingerprint(folder), hidden, generate_urls, pool_urls, timeouts,
                   api_key=api_key, reasoning_adapter=adapter_hash(reasoning_adapter) if reasoning_adapter else None)

    # ---- Engine interface ------------------------------------------------------------------------------------

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        """Greedy reasoning up to `<answer>` (or the budget, then `<answer>` is appended), and the user vector."""
        decoded = self._complete([self.render(text) for text in user_texts], max_new_tokens, ANSWER_MARKER,
                                  LORA_NAME if self.reasoning_adapter else None)
        reasonings = [d.text.split(ANSWER_MARKER, 1)[0] for d in decoded]
        vectors = self._embed([self.render(u, r + ANSWER_MARKER) for u, r in zip(user_texts, reasonings, strict=False)])
        return [Reasoning(r, v, d.tokens, d.stopped) for r, v, d in zip(reasonings, vectors, decoded, strict=False)]

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        """User vectors with the assistant turn just `<answer>` (no generation)."""
        return self._embed([self.render(text, ANSWER_MARKER) for text in user_texts])

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        """Item vectors: [user: item prompt][assistant: `<answer>`]."""
        return self._embed([self.render(text, ANSWER_MARKER) for text in item_texts])

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]:
        """Continue each assistant turn from its prefix until `stop`, end-of-turn or the budget."""
        rendered = [self.render(u, p) for u, p in zip(user_texts, assistant_prefixes, strict=True)]
        return [
            Generation(d.text.split(stop, 1)[0], d.tokens, d.stopped)
            for d in self._complete(rendered, max_new_tokens, stop)
        ]

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray:
        """Next-token probabilities of single-token `choices` after each prefix, renormalized over the choices."""
        choice_ids = single_token_ids(self.tokenizer, choices)
        rendered = [self.render(u, p) for u, p in zip(user_texts, assistant_prefixes, strict=True)]
        if not rendered:
            return np.zeros((0, len(choice_ids)), dtype=np.float32)
        body = {
            "prompt": [self._ids(text) for text in rendered], "max_tokens": 1, "temperature": 0.0,
            "logprobs": len(choice_ids), "logprob_token_ids": choice_ids, "return_tokens_as_token_ids": True,
        }
        rows = []
        for choice in _by_index(self.generation.post(COMPLETIONS_PATH, body)["choices"], len(rendered)):
            top = choice["logprobs"]["top_logprobs"][0]
            logprobs = np.array([top[f"token_id:{i}"] for i in choice_ids], dtype=np.float64)
            probs = np.exp(logprobs - logprobs.max())
            rows.append(probs / probs.sum())
        return np.asarray(rows, dtype=np.float32)

    # ---- internals -------------------------------------------------------------------------------------------

    def render(self, user_text: str, assistant_text: str = "") -> str:
        return render_chat(self.tokenizer, user_text, assistant_text)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _complete(self, rendered: list[str], max_new_tokens: int, stop: str, lora: str | None = None
                  ) -> list[_Decoded]:
        """Greedy completions of token-id prompts (with the server's LoRA adapter `lora`), decoded here from the
        returned token ids."""
        if not rendered or max_new_tokens <= 0:
            return [_Decoded("", 0, False) for _ in rendered]
        body: dict[str, Any] = {
            "prompt": [self._ids(text) for text in rendered], "max_tokens": max_new_tokens, "temperature": 0.0,
            "stop": [stop], "include_stop_str_in_output": True, "skip_special_tokens": False,
            "return_token_ids": True,
        }
        if lora is not None:
            body["model"] = lora
        choices = _by_index(self.generation.post(COMPLETIONS_PATH, body)["choices"], len(rendered))
        decoded = []
        for choice in choices:
            ids = [i for i in choice["token_ids"] if i not in self._end_ids]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            decoded.append(_Decoded(text, len(ids), stop in text))
        return decoded

    def _embed(self, rendered: list[str]) -> np.ndarray:
        """Pooling-server vectors (last token, final norm, not normalized), EMBED_CHUNK texts per request so
        that a large batch (indexing a catalog) does not run into the read timeout."""
        vectors = np.zeros((len(rendered), self.hidden_size), dtype=np.float32)
        for start in range(0, len(rendered), EMBED_CHUNK):
            chunk = rendered[start : start + EMBED_CHUNK]
            body = {"input": [self._ids(text) for text in chunk], "encoding_format": "float", "use_activation": False}
            data = _by_index(self.pooling.post(EMBEDDINGS_PATH, body)["data"], len(chunk))
            rows = np.asarray([row["embedding"] for row in data], dtype=np.float32)
            if rows.shape != (len(chunk), self.hidden_size):
                raise ValueError(f"pooling server returned vectors of shape {rows.shape}, expected hidden size "
                                 f"{self.hidden_size}: is it serving the same model?")
            vectors[start : start + len(chunk)] = rows
        return vectors


def _by_index(rows: list[dict[str, Any]], expected: int) -> list[dict[str, Any]]:
    """The response rows in request order; a server that dropped or added rows is an error."""
    ordered = sorted(rows, key=lambda row: row["index"])
    if [row["index"] for row in ordered] != list(range(expected)):
        raise ValueError(f"server answered {len(rows)} rows for {expected} prompts")
    return ordered
