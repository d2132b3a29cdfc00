"""What the app holds while it runs: settings, engine, item store, cache, metrics, rankers, the in-flight limit,
the request coalescer.

`start_state` is what the lifespan calls: it loads the engine (unless one is given, as tests do; the loaded
in-process engine sits behind the micro-batcher of `model.engines.batching`), opens the cache and tries to load the
index. Engine calls wait in worker threads, so the event loop's default thread pool is sized from
`max_inflight` (Python's default, cores + 4, would cap the batch the engine can form), and each of its threads
runs FAISS searches with `search_threads` OpenMP threads. A missing, corrupt or mismatched index does not stop
the service: /readyz answers 503 naming the problem, and the index is loaded as soon as one appears (e.g. after
`reasonrec index --dataset ...` has run), without a restart.
With `REASONREC_CATALOG_SYNC`, a loaded index is first brought up to date from the replicas' shared change
stream (`service.catalog_sync`); until Redis answers, /readyz says so with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from redis.exceptions import RedisError

from indexer.core.catalog import Item
from indexer.core.fingerprint import ManifestMismatchError
from indexer.errors import CorruptIndexError
from indexer.manifest import check_table
from indexer.store import CURRENT_FILE, ItemStore
from model.engines.base import Engine
from model.engines.batching import MicroBatchingEngine
from model.networks.item_features import ContentFeaturizer
from model.networks.table_artifact import TableArtifact
from model.prompts import item_prompt
from model.rating.factors import RatingModel
from service.cache import Cache, make_cache
from service.catalog_sync import CatalogSync
from service.coalesce import Coalescer
from service.errors import ApiError
from service.metrics import Metrics
from service.rankers import LlmServing, Ranker, build_rankers
from service.settings import Settings
from service.startup import Served

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
    coalescer: Coalescer
    store: ItemStore | None = None
    index_problem: str = "the index has not been loaded yet"
    rankers: dict[str, Ranker] = field(default_factory=dict)
    table: TableArtifact | None = None
    featurizer: ContentFeaturizer | None = None
    rating: RatingModel | None = None
    sync: CatalogSync | None = None
    items_added: Callable[[], None] | None = None
    """Called after items were added through the admin API (the simulated-user job's wake-up), or None."""
    _index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Admin writes run one at a time (service.admin: a failed save reloads the store from disk)."""
    _failed_at: tuple[int, int] | None = None  # (mtime_ns, size) of the CURRENT file that failed to load

    def ready_store(self) -> ItemStore:
        """The loaded store, or a 503 saying why there is none."""
        if self.store is None:
            raise ApiError(503, f"the item index is not ready: {self.index_problem}")
        return self.store

    def replace_store(self, store: ItemStore) -> None:
        """Serve `store` from now on (requests that already hold the old one finish with it)."""
        self.store = store
        self.metrics.index_items.set(len(store))

    async def ensure_index(self) -> ItemStore | None:
        """The store, loading it first if it is not loaded yet and an index (a new one, if the last failed) exists;
        with catalog sync fallen behind a trimmed stream, the base index is loaded again and the snapshot applied."""
        if self.sync is not None and self.sync.behind and self.store is not None:
            log.warning("catalog sync fell behind the trimmed stream: reloading the base index")
            self.store = None
        if self.store is None:
            async with self._index_lock:
                if self.store is None:
                    store = await asyncio.to_thread(self._try_load_index)
                    if store is not None and await self._synced(store):
                        self.store = store
                        self.metrics.index_items.set(len(store))
        return self.store

    async def _synced(self, store: ItemStore) -> bool:
        """With catalog sync, replay the shared changes into `store` first; False (not ready) if Redis fails."""
        if self.sync is None:
            return True
        try:
            await self.sync.attach(store)
        except (RedisError, OSError) as exc:
            self.index_problem = f"catalog sync cannot read the shared changes from Redis ({type(exc).__name__}: {exc})"
            log.error("%s", self.index_problem)
            return False
        except Exception as exc:  # a bug while replaying must cost readiness (503), not every request (500)
            self.index_problem = f"catalog sync could not replay the shared changes ({type(exc).__name__}: {exc})"
            log.exception("%s", self.index_problem)
            return False
        return True

    def _try_load_index(self) -> ItemStore | None:
        current = self.index_dir / CURRENT_FILE
        try:
            stat = current.stat()
        except OSError:
            self.index_problem = (
                f"no index at {self.index_dir}; build it with `reasonrec index --dataset {self.settings.dataset}`"
                + (" (or fix REASONREC_INDEX_DIR)" if self.settings.index_dir else "")
            )
            return None
        marker = (stat.st_mtime_ns, stat.st_size)
        if marker == self._failed_at:
            return None  # the same index that failed before: do not reload it on every probe
        try:
            store = ItemStore.load(self.index_dir, expect=self.engine.fingerprint)
            check_table(store.manifest, self.table.table_hash if self.table else None)
        except (CorruptIndexError, ManifestMismatchError, OSError) as exc:
            self._failed_at = marker
            self.index_problem = str(exc)
            log.error("cannot load the index at %s: %s", self.index_dir, exc)
            return None
        except Exception as exc:  # a damage the checks above did not foresee: still 503 (not ready), never a 500
            self._failed_at = marker
            self.index_problem = f"the index at {self.index_dir} cannot be loaded ({type(exc).__name__}: {exc})"
            log.exception("cannot load the index at %s", self.index_dir)
            return None
        log.info("loaded index %s (%d items) from %s", store.manifest.version_id, len(store), self.index_dir)
        return store

    def item_vectors(self, items: Sequence[Item]) -> np.ndarray:
        """What the index holds for new items: the table's content rows [g(c), g_b(c)] when there is a table (a
        hot-added item has no residual), else the model's raw item states. Blocking: call it in a worker thread."""
        if self.table is None or self.featurizer is None:
            return self.engine.embed_items([item_prompt(item) for item in items])
        return self.table.content_rows(self.featurizer.features(items))

    async def close(self) -> None:
        await self.cache.close()
        if self.sync is not None:
            await self.sync.close()


async def start_state(served: Served, metrics: Metrics) -> AppState:
    """Open the cache, build the rankers, try the index; see the module docstring."""
    settings, engine, table, featurizer = served.settings, served.engine, served.table, served.featurizer
    workers = ThreadPoolExecutor(
        2 * settings.max_inflight + 8, thread_name_prefix="reasonrec", initializer=faiss.omp_set_num_threads,
        initargs=(settings.search_threads,),
    )
    asyncio.get_running_loop().set_default_executor(workers)
    if isinstance(engine, MicroBatchingEngine):
        engine.observer = metrics
    cache = make_cache(settings, metrics)
    state = AppState(
        settings, metrics, engine, cache, served.index_dir, InflightLimiter(settings.max_inflight, metrics),
        Coalescer(cache, metrics), table=table, featurizer=featurizer, rating=served.rating,
    )
    llm = LlmServing(engine, table, state.coalescer, settings.request_timeout_s, settings.popularity_prior,
                     served.conclusion)
    state.rankers = build_rankers(state.ready_store, metrics, llm, settings.sasrec_checkpoint)
    if settings.catalog_sync:
        catalog_url = str(settings.catalog_redis_url or settings.redis_url)
        state.sync = CatalogSync(catalog_url, settings.cache_prefix, metrics, settings.redis_secret(),
                                 settings.catalog_snapshot_every)
    await state.ensure_index()
    if state.store is None:
        log.warning("serving without an index: %s", state.index_problem)
    return state
