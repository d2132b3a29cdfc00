"""GET /try: a page to try the recommender in a browser (plain HTML and JavaScript over the public API: search the
catalog, rate a few items, see every ranker's list side by side, /rate one item); GET / leads there."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(include_in_schema=False)

PAGE = Path(__file__).parents[1] / "static" / "try.html"


@cache
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/try", response_class=HTMLResponse)
async def try_page() -> HTMLResponse:
    return HTMLResponse(page())


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/try")
