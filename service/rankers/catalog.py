"""The served rankers that need no engine: `popular`, `sasrec` and `content`, each a core of `model.rankers`
built for the catalog the app serves now (a write replaces the catalog object, so a core is rebuilt, or
extended, for the new version on the next request). About a millisecond per request once built; one of them
is the fallback of the LLM rankers.

- `popular`: catalog rating counts, ties by item id.
- `sasrec`: the checkpoint of `REASONREC_SASREC_CHECKPOINT`, loaded on first use (503 naming what to do when
  there is none or it cannot be read, whatever the error: a corrupt file raises whatever its reader raises; not
  read again until the folder changes). Catalog items it never saw (hot-added ones) cannot be scored and history
  entries it never saw are skipped: the response's `notes` say how many; a history with nothing it knows raises
  `CannotRank("cannot_score")`, so the fallback answers instead of an arbitrary order.
- `content`: MiniLM text vectors (`model.networks.minilm`, loaded on first use), each item encoded once; hot-added items
  are encoded when the catalog that holds them is first ranked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from indexer.core.catalog import Catalog
from model.networks.minilm import TextEncoder
from model.networks.sasrec import SasrecScorer
from model.rankers.base import ScoreRanker, top_k_of
from model.rankers.content import ContentRanker
from model.rankers.popular import PopularRanker
from model.rankers.sasrec import SasrecRanker
from service.errors import ApiError, CannotRank
from service.metrics import Metrics
from service.rankers.base import Ranked, RankQuery, StoreGetter

log = logging.getLogger(__name__)


class ServedScoreRanker(ABC):
    """A `ScoreRanker` core per catalog version, ranked in a worker thread."""

    uses_engine: ClassVar[bool] = False

    def __init__(self, store: StoreGetter, metrics: Metrics) -> None:
        self.store, self.metrics = store, metrics
        self._built: tuple[Catalog, ScoreRanker, frozenset[str]] | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def build(self, catalog: Catalog) -> ScoreRanker:
        """The core for `catalog` (called once per catalog version, under a lock)."""

    def core(self, catalog: Catalog) -> tuple[ScoreRanker, frozenset[str]]:
        """The core for `catalog` and the items it knows that the catalog no longer has (never returned)."""
        with self._lock:
            if self._built is None or self._built[0] is not catalog:
                core = self.build(catalog)
                self._built = (catalog, core, frozenset(i for i in core.item_ids if i not in catalog))
            return self._built[1], self._built[2]

    def notes(self, core: ScoreRanker, catalog: Catalog, query: RankQuery) -> tuple[str, ...]:
        return ()

    def _rank(self, catalog: Catalog, query: RankQuery) -> tuple[ScoreRanker, list[tuple[str, float]]]:
        core, gone = self.core(catalog)
        scores = core.scores([query.history])[0]
        if not np.isfinite(scores).any():  # e.g. SASRec knows no item of the history
            raise CannotRank("cannot_score")
        return core, top_k_of(scores, core.item_ids, query.k, query.exclude | gone)

    async def rank(self, query: RankQuery, timings_ms: dict[str, float]) -> Ranked:
        catalog = self.store().catalog
        with self.metrics.stage("search", timings_ms):
            core, top = await asyncio.to_thread(self._rank, catalog, query)
        return Ranked(top, notes=self.notes(core, catalog, query))


class PopularServed(ServedScoreRanker):
    def build(self, catalog: Catalog) -> ScoreRanker:
        return PopularRanker({item.item_id: item.rating_count for item in sorted(catalog, key=lambda i: i.item_id)})


class SasrecServed(ServedScoreRanker):
    def __init__(self, store: StoreGetter, metrics: Metrics, checkpoint: Path | None) -> None:
        super().__init__(store, metrics)
        self.checkpoint = checkpoint
        self._scorer: SasrecScorer | None = None
        self._failed: tuple[tuple[tuple[str, int], ...], str] | None = None
        """(files and mtimes, error) of the last failed load: the same files are not read again."""

    def scorer(self) -> SasrecScorer:
        """The loaded scorer, or a 503 naming what to do (no checkpoint configured, or it cannot be read)."""
        if self._scorer is None:
            path = self.checkpoint
            if path is None:
                raise ApiError(503, "the sasrec ranker has no checkpoint: train one with `reasonrec train-sasrec "
                               "--dataset <dataset>` and set REASONREC_SASREC_CHECKPOINT", param="ranker")
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

    def build(self, catalog: Catalog) -> ScoreRanker:
        return SasrecRanker(self.scorer())

    def notes(self, core: ScoreRanker, catalog: Catalog, query: RankQuery) -> tuple[str, ...]:
        scorer = self.scorer()
        notes = []
        unscorable = len(scorer.cannot_score(catalog.ids()))
        if unscorable:
            notes.append(f"sasrec cannot score {unscorable} catalog item(s) it never saw in training "
                         "(e.g. hot-added items); they are not ranked")
        known = [i for i in query.history.item_ids if i is not None]
        unknown = scorer.cannot_score(known)
        if unknown:
            notes.append(f"sasrec skipped {len(unknown)} history item(s) it never saw in training")
        if len(known) < len(query.history.item_ids):
            notes.append("sasrec skipped the history entries given by title only")
        return tuple(notes)


class ContentServed(ServedScoreRanker):
    def __init__(self, store: StoreGetter, metrics: Metrics) -> None:
        super().__init__(store, metrics)
        self._encoder: TextEncoder | None = None
        self._vectors: dict[str, np.ndarray] = {}

    def build(self, catalog: Catalog) -> ScoreRanker:
        if self._encoder is None:
            from model.networks.minilm import MiniLMEncoder  # loads MiniLM (~1 s) on first use only

            self._encoder = MiniLMEncoder()
        core = ContentRanker(self._encoder, list(catalog), self._vectors)
        self._vectors = dict(zip(core.item_ids, core.item_vectors, strict=True))
        return core
