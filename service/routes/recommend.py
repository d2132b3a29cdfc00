"""POST /recommend: items for a history, best first, with the reasoning behind them (docs/design.md section 3)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.deps import Slot, State, Store
from service.recommend import ranker_name, recommend
from service.schemas import RecommendRequest, RecommendResponse, error_responses

router = APIRouter(tags=["recommend"])


@router.post(
    "/recommend", response_model=RecommendResponse, dependencies=[Slot],
    responses=error_responses(400, 413, 422, 429, 503),
)
async def post_recommend(body: RecommendRequest, request: Request, state: State, store: Store) -> RecommendResponse:
    """Rank items for the history with the requested ranker; on engine timeout/failure the fallback ranker
    answers and `fallback` says why."""
    request.state.ranker = ranker_name(body, state.settings)
    return await recommend(state, store, body)
