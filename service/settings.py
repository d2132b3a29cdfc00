"""The gateway's one settings object: every field is read from an environment variable `REASONREC_<FIELD>`.

`Settings()` reads the environment; tests and the CLI may also pass values directly, e.g.
`Settings(model="tiny", index_dir=path)` (a value passed directly wins over the environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

UrlList = Annotated[list[str], NoDecode]  # from the environment: comma-separated


class Settings(BaseSettings):
    """Configuration of the FastAPI gateway (see docs/design.md section 3 for the request flow it tunes)."""

    model_config = SettingsConfigDict(env_prefix="REASONREC_", extra="ignore")

    # ---- model and index -------------------------------------------------------------------------------------
    artifacts: Path = Field(Path("artifacts"), description=(
        "Root of the trained artifacts (converted model, indexes, tables, checkpoints): the folder the "
        "`reasonrec` jobs write to under the same variable."))
    default_artifacts: bool = Field(True, description=(
        "Fill each unset artifact (sasrec_checkpoint, table, rating_model) with the dataset's finished one under "
        "`artifacts`, else the one shipped in deploy/artifacts/<dataset>; off: serve only what is configured."))
    model: str = Field("smollm2", description='Model to serve: "smollm2" (default), "tiny" (tests) or a HF folder.')
    adapter: Path | Literal["none"] | None = Field(None, description=(
        "The reasoning adapter (peft LoRA folder, `reasonrec train-reasoning`): on for the reasoning and the state "
        "after it, off for item vectors, `direct` and ratings, so the base model's table and index stay valid. "
        "Unset: the dataset's trained one, else the one shipped in deploy/artifacts/<dataset>/reasoning (with "
        "default_artifacts); `none`: the base model reasons. A whole-model adapter (contrastive LoRA) is served "
        "merged: `reasonrec merge-adapter`, then REASONREC_MODEL."))
    dataset: str = Field("ml-100k", description="Dataset whose index is served when index_dir is not set.")
    table: Path | None = Field(None, description=(
        "Item-table artifact folder (`reasonrec train-table`): the direct and reasoning rankers score "
        "u = s(history) + f(state) against its rows. `reasonrec serve` uses the dataset's finished one when this "
        "is unset; without one they rank by the cosine of the model's raw states."))
    index_dir: Path | None = Field(
        None,
        description="Index root folder (holds CURRENT); default: artifacts/indexes/<dataset>/<model fingerprint>.",
    )
    engine_batch_size: int = Field(8, ge=1, le=256, description="Largest batch the in-process engine runs at once.")
    popularity_prior: float = Field(
        0.0, ge=0, le=100, description="LLM rankers: weight w of the popularity prior, score = cosine + w x log(1 + "
        "the item's rating count in the catalog; 0 for hot-added items without one) (indexer.prior); 0 = plain cosine.",
    )

    # ---- engine ----------------------------------------------------------------------------------------------
    engine: Literal["fast", "transformers", "vllm"] = Field(
        "fast", description='"fast" (in process, the lean forward of model/engines/lean.py, one sequence at a time), '
        '"transformers" (in process, batched: its parity reference) or "vllm" (HTTP to vLLM servers of `model`).'
    )
    engine_precision: Literal["fp32", "exact", "fast"] = Field(
        "exact", description='Weights of the fast engine: "exact" (fp16 for decode steps: the fp32 greedy text, '
        'measured in docs/results/bench_fast_engine.md), "fp32", or "fast" (bf16 for prefills too: faster, '
        "the text drifts on some prompts).")
    engine_threads: int | None = Field(
        None, ge=1, le=256, description="Torch threads of the in-process engine; unset: torch's default (the "
        "cores). Fewer than the cores when other work shares them: a busy core slows every thread's step.")
    vllm_generate_urls: UrlList = Field(
        default_factory=list, description="vLLM generation replicas, comma-separated base URLs (engine=vllm)."
    )
    vllm_pool_urls: UrlList = Field(
        default_factory=list,
        description="vLLM pooling (embed, LAST) replicas, comma-separated base URLs (engine=vllm)."
    )
    vllm_api_key: SecretStr | None = Field(
        None, description="API key of the vLLM servers (their VLLM_API_KEY), sent as a bearer token on every call; "
        "unset: none is sent.",
    )
    vllm_retry_after_s: float = Field(
        5.0, gt=0, description="Seconds a failed vLLM replica stays out of rotation before it is probed again."
    )
    catalog_sync: bool = Field(
        False, description="Share hot-added items between gateway replicas through Redis (needs catalog_redis_url "
        "or redis_url)."
    )
    catalog_redis_url: str | None = Field(
        None, description="Redis of the shared catalog stream (catalog_sync); unset: redis_url. Production keeps the "
        "two apart: the cache's Redis evicts under its maxmemory (allkeys-lru), the catalog's must never evict "
        "(noeviction, AOF), and one policy cannot serve both. The same user and password log in to both.",
    )
    catalog_snapshot_every: int = Field(
        100, ge=1, le=100_000, description="Catalog-stream entries between two snapshots; the stream is trimmed "
        "behind each, so a starting replica applies the snapshot and replays at most about this many entries.",
    )
    micro_batching: bool = Field(
        True, description="Batch concurrent calls of the in-process engine (model.engines.batching); off: one call at "
        "a time."
    )
    continuous_batching: bool = Field(
        True, description="With micro_batching: decodes join and leave a running batch between steps; off: per-batch."
    )
    batch_window_ms: float = Field(
        5.0, ge=0, le=1000, description="How long the first call of an idle batcher waits for others to batch with."
    )
    search_threads: int = Field(
        1, ge=1, le=256, description="OpenMP threads of one FAISS search; 1 keeps concurrent searches from "
        "oversubscribing the cores (on 2 busy cores, p99 of a 1.7k-item search: 3 ms instead of 65 ms).",
    )

    # ---- cache -----------------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None, description="Redis URL (e.g. redis://127.0.0.1:6379/0); unset: an in-process LRU cache."
    )
    redis_password: SecretStr | None = Field(
        None, description="Password of the Redis user (AUTH; the user name goes in the URL: "
        "redis://reasonrec@host:6379/0); kept out of REASONREC_REDIS_URL so it shows in no log or settings dump.",
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
        "sasrec",
        description="Production ranker that answers when the engine times out or fails (no engine); when it "
        "cannot answer (sasrec without a checkpoint), `popular` does.",
    )
    sasrec_checkpoint: Path | None = Field(
        None, description="SASRec+ checkpoint folder (`reasonrec train-sasrec`); unset: the sasrec ranker answers "
        "503 and the fallback is popular. `reasonrec serve` sets it to the dataset's default checkpoint.",
    )
    default_reasoning_tokens: int = Field(
        48, ge=1, description="Reasoning token budget when a request gives none: room for the grounded reasoning of a "
        "`reasonrec train-reasoning` adapter (at most 42 tokens with `<answer>`), so the cap is the exception.")
    max_reasoning_tokens: int = Field(256, ge=1, description="Largest max_reasoning_tokens a request may ask for.")
    rating_tokens_per_tag: int = Field(32, ge=1, le=512, description="Token budget of each reasoning tag in /rate.")
    rating_model: Path | None = Field(None, description=(
        "Rating-model folder (`reasonrec train-rating`): /rate answers with its rating and grounded four-tag "
        "reasoning. `reasonrec serve` uses the dataset's finished one (else the shipped one) when this is unset; "
        "without one /rate uses the guided LLM rating."))
    rate_with: Literal["model", "llm"] = Field("model", description=(
        "What answers /rate: `model` (the rating model when one is configured) or `llm` (the guided LLM rating "
        "read from the token probabilities after <rate>, kept as an ablation)."))

    judge: Path | None = Field(None, description=(
        "Judge folder (`reasonrec train-judge`: a LoRA adapter and pool.json): items added through /admin/items "
        "are then refined in the background by the model answering as the pool's users (service.simulated_users); "
        "needs an item table, not with catalog_sync. Unset: hot-added items keep their text placement."))
    judge_users_per_item: int = Field(8, ge=1, le=1000, description=(
        "Pool users asked about each hot-added item (one pair each, against another hot-added item)."))
    judge_l2: float = Field(10.0, ge=0, le=1e6, description=(
        "How strongly a refined row is held to its text row (the refinement's l2). ML-100k cold-items, 8 users per "
        "item: validation picks .1, which lowers test cold Recall@50 from .117 to .030; 10 leaves validation as it "
        "is and gives .132 on test (docs/results/ml-100k-cold-items-simulated-users-llm-*-judge-seed0.md)."))

    # ---- limits and serving ----------------------------------------------------------------------------------
    max_inflight: int = Field(
        8, ge=1, description="Work requests (recommend, rate, admin) served at once; more are refused with 429."
    )
    request_timeout_s: float = Field(
        60.0, gt=0,
        description="Deadline of an engine call; past it the fallback ranker answers (or the estimate). 64 reasoning "
        "tokens take ~8 s on 2 idle CPU cores with SmolLM2-135M, several times that on a busy machine.",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body of the public routes (a /recommend or /rate body "
        "with 200 long history entries is ~100 kB); over it: 413, and the body is not read.",
    )
    max_admin_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest /admin body, checked after the admin token (1,000 items "
        "with 5,000-character descriptions are ~6 MB); over it: 413, and the body is not read.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the /admin routes; unset: the admin routes answer 403."
    )
    host: str = Field("127.0.0.1", description="Address `serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `serve` binds.")

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter_off(cls, value: object) -> object:
        return "none" if isinstance(value, str) and value.strip().lower() in ("none", "off", "") else value

    def reasoning_adapter(self) -> Path | None:
        """The reasoning adapter folder to load, None when there is none (unset, or "none")."""
        return None if self.adapter in (None, "none") else Path(self.adapter)

    def redis_secret(self) -> str | None:
        """The Redis password in clear, for the Redis clients only."""
        return self.redis_password.get_secret_value() if self.redis_password is not None else None

    def vllm_secret(self) -> str | None:
        """The vLLM API key in clear, for the engine's HTTP client and the readiness probe only."""
        return self.vllm_api_key.get_secret_value() if self.vllm_api_key is not None else None

    @field_validator("vllm_generate_urls", "vllm_pool_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        return [url.strip() for url in value.split(",") if url.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _engine_complete(self) -> Settings:
        if self.engine == "vllm":
            if not self.vllm_generate_urls or not self.vllm_pool_urls:
                raise ValueError(
                    "REASONREC_ENGINE=vllm needs REASONREC_VLLM_GENERATE_URLS and REASONREC_VLLM_POOL_URLS")
        if self.catalog_sync and not (self.catalog_redis_url or self.redis_url):
            raise ValueError("REASONREC_CATALOG_SYNC=true needs REASONREC_CATALOG_REDIS_URL or REASONREC_REDIS_URL "
                             "(the shared catalog lives there)")
        if self.catalog_sync and self.judge is not None:
            raise ValueError("REASONREC_JUDGE runs on a single gateway: with REASONREC_CATALOG_SYNC every replica "
                             "would ask the judge on its own; unset one of them")
        return self

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
