"""The `sasrec` ranker: the production ranker (SASRec+, `model.sasrec`) served next to the LLM rankers.

The checkpoint (`REASONREC_SASREC_CHECKPOINT`, written by `reasonrec train-sasrec`) is loaded on first use. SASRec
knows only the items of its training data: history entries it has never seen are skipped, and catalog items it
has never seen (hot-added ones) cannot be scored; the response's `notes` say how many of each rather than
dropping them silently. A history with no item SASRec knows cannot be ranked at all: the next ranker answers
(`fallback: "cannot_score"`). A checkpoint that cannot be loaded, whatever the error, is a 503 (the fallback
chain goes on to `popular`). No engine: about a millisecond per request, so it is the default fallback ranker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from indexer.catalog import Catalog
from model.sasrec import CannotScoreError, SasrecScorer
from service.errors import ApiError
from service.rankers.base import CannotRank, RankQuery, Ranked

if TYPE_CHECKING:
    from service.state import AppState

log = logging.getLogger(__name__)


class SasrecRanker:
    uses_engine: ClassVar[bool] = False

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._scorer: SasrecScorer | None = None
        self._load_lock = threading.Lock()
        self._gaps: tuple[Catalog, frozenset[str], int] | None = None
        self._failed: tuple[tuple[tuple[str, int], ...], str] | None = None
        """(files and mtimes, error) of the last failed load: the same files are not read again."""

    def scorer(self) -> SasrecScorer:
        """The loaded scorer, or a 503 naming what to do (no checkpoint configured, or it cannot be read: any
        error, as a corrupt file raises whatever its reader raises; not retried until the folder changes)."""
        if self._scorer is None:
            path = self.state.settings.sasrec_checkpoint
            if path is None:
                raise ApiError(503, "the sasrec ranker has no checkpoint: train one with `reasonrec train-sasrec "
                               "--dataset <dataset>` and set REASONREC_SASREC_CHECKPOINT", param="ranker")
            with self._load_lock:
                if self._scorer is None:
                    self._scorer = self._load(path)
        return self._scorer

    def _load(self, path: Path) -> SasrecScorer:
        files = sorted(f for f in path.glob("*") if f.is_file()) if path.is_dir() else []
        marker = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        if self._failed is not None and self._failed[0] == marker:
            raise ApiError(503, self._failed[1], param="ranker")
        try:
            return SasrecScorer.load(path)
        except Exception as exc:
            message = f"the sasrec checkpoint cannot be loaded: {type(exc).__name__}: {exc}"
            log.error("%s (%s)", message, path)
            self._failed = (marker, message)
            raise ApiError(503, message, param="ranker") from exc

    def gaps(self, scorer: SasrecScorer, catalog: Catalog) -> tuple[frozenset[str], int]:
        """(ids SASRec knows that the catalog no longer has, count of catalog items SASRec cannot score), per
        catalog version (a write replaces the catalog object)."""
        if self._gaps is None or self._gaps[0] is not catalog:
            removed = frozenset(i for i in scorer.item_ids if i not in catalog)
            self._gaps = (catalog, removed, len(scorer.cannot_score(catalog.ids())))
        return self._gaps[1], self._gaps[2]

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        scorer = self.scorer() if self._scorer is not None else await asyncio.to_thread(self.scorer)
        catalog = self.state.ready_store().catalog
        history = [item_id for item_id in query.history_ids if item_id is not None]
        removed, unscorable = self.gaps(scorer, catalog)
        with self.state.metrics.stage("search", timings_ms):
            try:
                top = scorer.top_k(history, query.k, exclude=query.exclude | removed)
            except CannotScoreError as exc:  # no history item it knows: its order would be the vocabulary's
                raise CannotRank("cannot_score") from exc
        notes = []
        if unscorable:
            notes.append(f"sasrec cannot score {unscorable} catalog item(s) it never saw in training "
                         "(e.g. hot-added items); they are not ranked")
        unknown = scorer.cannot_score(history)
        if unknown:
            notes.append(f"sasrec skipped {len(unknown)} history item(s) it never saw in training")
        if len(history) < len(query.history_ids):
            notes.append("sasrec skipped the history entries given by title only")
        return Ranked(top, notes=tuple(notes))
