"""POST /rate: the user's predicted rating of one item, with RecZero-style tagged reasoning."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Slot, State, Store
from service.rate import rate
from service.schemas import RateRequest, RateResponse, error_responses

router = APIRouter(tags=["rate"])


@router.post("/rate", response_model=RateResponse, dependencies=[Slot],
             responses=error_responses(400, 413, 422, 429, 503))
async def post_rate(body: RateRequest, state: State, store: Store) -> RateResponse:
    """Predict a rating 1..5 (expected value under the model); `parsed: false` marks an average-based estimate."""
    return await rate(state, store, body)
