"""The gateway's one settings object: every field is read from an environment variable `REASONREC_<FIELD>`.

`Settings()` reads the environment; tests and the CLI may also pass values directly, e.g.
`Settings(model="tiny", index_dir=path)` (a value passed directly wins over the environment).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of the FastAPI gateway (see DESIGN.md section 3 for the request flow it tunes)."""

    model_config = SettingsConfigDict(env_prefix="REASONREC_", extra="ignore")

    # ---- model and index -------------------------------------------------------------------------------------
    model: str = Field("smollm2", description='Model to serve: "smollm2" (default), "tiny" (tests) or a HF folder.')
    adapter: Path | None = Field(None, description="Optional peft LoRA adapter folder applied on top of the model.")
    dataset: str = Field("ml-100k", description="Dataset whose index is served when index_dir is not set.")
    index_dir: Path | None = Field(
        None,
        description="Index root folder (holds CURRENT); default: artifacts/indexes/<dataset>/<model fingerprint>.",
    )
    engine_batch_size: int = Field(8, ge=1, le=256, description="Largest batch the in-process engine runs at once.")

    # ---- cache -----------------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None, description="Redis URL (e.g. redis://127.0.0.1:6379/0); unset: an in-process LRU cache."
    )
    cache_prefix: str = Field("reasonrec:", max_length=64, description="Prefix of every Redis key this service writes.")
    cache_ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached reasoning or rating, in seconds.")
    cache_size: int = Field(10_000, ge=1, description="Entries kept by the in-process LRU cache (no Redis).")
    cache_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Socket timeout of each Redis call; a slower Redis is skipped, never awaited."
    )

    # ---- rankers and generation ------------------------------------------------------------------------------
    default_ranker: str = Field("reasoning", description="Ranker used when a /recommend request names none.")
    fallback_ranker: str = Field(
        "popular", description="Production ranker that answers when the engine times out or fails (no engine)."
    )
    default_reasoning_tokens: int = Field(64, ge=1, description="Reasoning token budget when a request gives none.")
    max_reasoning_tokens: int = Field(256, ge=1, description="Largest max_reasoning_tokens a request may ask for.")
    rating_tokens_per_tag: int = Field(32, ge=1, le=512, description="Token budget of each reasoning tag in /rate.")

    # ---- limits and serving ----------------------------------------------------------------------------------
    max_inflight: int = Field(
        8, ge=1, description="Work requests (recommend, rate, admin) served at once; more are refused with 429."
    )
    request_timeout_s: float = Field(
        60.0, gt=0,
        description="Deadline of an engine call; past it the fallback ranker answers (or the estimate). 64 reasoning "
        "tokens take ~8 s on 2 idle CPU cores with SmolLM2-135M, several times that on a busy machine.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the /admin routes; unset: the admin routes answer 403."
    )
    host: str = Field("127.0.0.1", description="Address `serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `serve` binds.")

    @model_validator(mode="after")
    def _budgets_agree(self) -> Settings:
        if self.default_reasoning_tokens > self.max_reasoning_tokens:
            raise ValueError(
                f"REASONREC_DEFAULT_REASONING_TOKENS ({self.default_reasoning_tokens}) must not exceed "
                f"REASONREC_MAX_REASONING_TOKENS ({self.max_reasoning_tokens})"
            )
        if self.admin_token is not None and not self.admin_token.get_secret_value():
            self.admin_token = None  # an empty REASONREC_ADMIN_TOKEN= means "no token": admin stays closed
        return self
