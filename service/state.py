"""What the app holds while it runs: settings, engine, item store, cache, metrics, rankers, the in-flight limit.

`start_state` is what the lifespan calls: it loads the engine (unless one is given, as tests do), opens the
cache and tries to load the index. A missing, corrupt or mismatched index does not stop the service: /readyz
answers 503 naming the problem, and the index is loaded as soon as one appears (e.g. after
`reasonrec index --dataset ...` has run), without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import CorruptIndexError
from indexer.manifest import ManifestMismatchError
from indexer.store import CURRENT_FILE, ItemStore
from model.engine import Engine
from model.loading import load_model
from model.paths import default_index_dir
from model.transformers_engine import TransformersEngine
from service.cache import Cache, make_cache
from service.errors import ApiError
from service.metrics import Metrics
from service.rankers import RANKERS, Ranker
from service.settings import Settings

log = logging.getLogger(__name__)


class InflightLimiter:
    """At most `limit` work requests at once; one more is refused at once (429), never queued."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.metrics = metrics
        self.active = 0  # touched from the event loop only

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            self.metrics.rejected.inc()
            return False
        self.active += 1
        self.metrics.inflight.set(self.active)
        return True

    def release(self) -> None:
        self.active -= 1
        self.metrics.inflight.set(self.active)


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    engine: Engine
    cache: Cache
    index_dir: Path
    limiter: InflightLimiter
    store: ItemStore | None = None
    index_problem: str = "the index has not been loaded yet"
    rankers: dict[str, Ranker] = field(default_factory=dict)
    _index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _failed_at: tuple[int, int] | None = None  # (mtime_ns, size) of the CURRENT file that failed to load

    def ready_store(self) -> ItemStore:
        """The loaded store, or a 503 saying why there is none."""
        if self.store is None:
            raise ApiError(503, f"the item index is not ready: {self.index_problem}")
        return self.store

    async def ensure_index(self) -> ItemStore | None:
        """The store, loading it first if it is not loaded yet and an index (a new one, if the last failed) exists."""
        if self.store is None:
            async with self._index_lock:
                if self.store is None:
                    await asyncio.to_thread(self._try_load_index)
        return self.store

    def _try_load_index(self) -> None:
        current = self.index_dir / CURRENT_FILE
        try:
            stat = current.stat()
        except OSError:
            self.index_problem = (
                f"no index at {self.index_dir}; build it with `reasonrec index --dataset {self.settings.dataset}`"
                + (" (or fix REASONREC_INDEX_DIR)" if self.settings.index_dir else "")
            )
            return
        marker = (stat.st_mtime_ns, stat.st_size)
        if marker == self._failed_at:
            return  # the same index that failed before: do not reload it on every probe
        try:
            store = ItemStore.load(self.index_dir, expect=self.engine.fingerprint)
        except (CorruptIndexError, ManifestMismatchError, OSError) as exc:
            self._failed_at = marker
            self.index_problem = str(exc)
            log.error("cannot load the index at %s: %s", self.index_dir, exc)
            return
        self.store = store
        self.metrics.index_items.set(len(store))
        log.info("loaded index %s (%d items) from %s", store.manifest.version_id, len(store), self.index_dir)

    async def close(self) -> None:
        await self.cache.close()


def load_engine(settings: Settings) -> Engine:
    """The in-process transformers engine for `settings.model` (+ adapter)."""
    return TransformersEngine(load_model(settings.model, settings.adapter), batch_size=settings.engine_batch_size)


async def start_state(settings: Settings, metrics: Metrics, engine: Engine | None = None) -> AppState:
    """Load the engine (unless given), open the cache, try the index; see the module docstring."""
    if engine is None:
        engine = await asyncio.to_thread(load_engine, settings)
    index_dir = settings.index_dir or default_index_dir(settings.dataset, engine.fingerprint)
    state = AppState(
        settings, metrics, engine, make_cache(settings, metrics), Path(index_dir),
        InflightLimiter(settings.max_inflight, metrics),
    )
    state.rankers = {name: cls(state) for name, cls in RANKERS.items()}
    await state.ensure_index()
    if state.store is None:
        log.warning("serving without an index: %s", state.index_problem)
    return state
