"""Helpers of the vLLM engine tests: a client on a given model, and the real servers a session started."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.engines.loading import LoadedModel
from model.engines.vllm_engine import VllmEngine, VllmTimeouts

SLOW_MACHINE = VllmTimeouts(read_s=600.0)


def client_for(
    loaded: LoadedModel, generate: list[str], pool: list[str], timeouts: VllmTimeouts | None = None
) -> VllmEngine:
    return VllmEngine(loaded.tokenizer, loaded.fingerprint, loaded.hidden_size, generate, pool, timeouts)


@dataclass(frozen=True)
class RealServers:
    generate_url: str
    pool_url: str
    model_dir: Path
    adapter: Path | None = None
    """The reasoning adapter the generation server serves as LoRA (None: started without one)."""

    def client(self, reasoning_adapter: bool = False) -> VllmEngine:
        """A client with a read timeout long enough for a machine busy with other jobs; with `reasoning_adapter`,
        one that reasons with the server's adapter."""
        return VllmEngine.for_model_folder(self.model_dir, [self.generate_url], [self.pool_url], SLOW_MACHINE,
                                           reasoning_adapter=self.adapter if reasoning_adapter else None)
