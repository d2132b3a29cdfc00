"""Dynamic micro-batching in front of an engine (docs/design.md section 4): one worker thread owns the engine and
runs whatever concurrent callers asked for as batches; the callers keep calling the `Engine` methods
synchronously (from the gateway's worker threads) and each gets back exactly its own rows.

- Decodes (`reason`, `generate`) on a `TransformersEngine` are batched continuously (`model.engines.continuous`):
  queued rows join the running batch between decode steps, up to `max_batch` rows, and leave it as soon as they
  are done. When the batch is empty, the first arrival waits up to `window_s` for company before its prefill.
- Every other call (`embed_direct`, `embed_items`, `choice_probs`, and the decodes of any other engine, or with
  `continuous=False`) is batched per request: calls of one method with the same parameters (e.g. `reason` with
  the same token budget) that arrive within `window_s` of the first run as one call of the inner engine, up to
  `max_batch` rows (a single larger call runs alone; the inner engine splits it by its own batch size).
- Deadlines: a caller may set `current_deadline` (a contextvar: `asyncio.to_thread` carries it into the worker
  thread that calls us). A call whose deadline has passed before it started is not computed at all: it fails
  with `DeadlineExpired`. A call that has started runs to the end, so its result can still be cached.
- The two kinds of work alternate: one per-request batch, then one decode step, so neither starves the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from model.engines.base import Deadline, DeadlineExpired, Engine, Generation, Reasoning, current_deadline
from model.engines.continuous import DecodeBatch, DecodeRow
from model.engines.transformers_engine import TransformersEngine
from model.prompts import ANSWER_MARKER

log = logging.getLogger(__name__)

DECODE_METHODS = ("reason", "generate")


class EngineClosed(RuntimeError):
    """The batching engine was closed before the call ran."""




class BatchObserver(Protocol):
    """What the batcher reports (e.g. to Prometheus); called from its worker thread."""

    def engine_batch(self, method: str, rows: int) -> None:
        """A batch ran: `method` is the engine method, or "decode" for one continuous decode step."""

    def engine_queued(self, method: str, seconds: float) -> None:
        """A call started after waiting `seconds` in the queue."""

    def engine_expired(self, method: str) -> None:
        """A call was dropped: its deadline passed while it was queued."""


class _Silent:
    def engine_batch(self, method: str, rows: int) -> None: ...

    def engine_queued(self, method: str, seconds: float) -> None: ...

    def engine_expired(self, method: str) -> None: ...


@dataclass
class BatchingStats:
    """Running totals (read them from any thread)."""

    batches: int = 0
    """Per-request batches run plus continuous decode steps."""
    rows: int = 0
    """Rows over those batches and steps."""
    max_rows: int = 0
    """Largest batch or step seen."""
    expired: int = 0
    """Calls dropped because their deadline passed while queued."""


@dataclass(eq=False)
class _Job:
    """One caller's call: its rows (per-row positional arguments) and the parameters shared by all of them."""

    method: str
    params: tuple[Any, ...]
    rows: list[tuple[Any, ...]]
    deadline: Deadline | None
    submitted: float = field(default_factory=time.monotonic)
    future: Future[Any] = field(default_factory=Future)
    results: list[Any] = field(default_factory=list)


class MicroBatchingEngine:
    """An `Engine` that batches concurrent calls to `inner` (see the module docstring)."""

    def __init__(
        self, inner: Engine, *, window_s: float = 0.005, max_batch: int = 8, continuous: bool = True,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"need max_batch >= 1 and window_s >= 0, got {max_batch} and {window_s}")
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.hidden_size = inner.hidden_size
        self.reasoning_adapter = inner.reasoning_adapter
        self.window_s = window_s
        self.max_batch = max_batch
        self.observer: BatchObserver = observer or _Silent()
        self.stats = BatchingStats()
        self._decoder = DecodeBatch(inner) if continuous and isinstance(inner, TransformersEngine) else None
        # A reasoning adapter is on for a whole decode batch: other generations are batched apart, as jobs.
        self._decode_methods = ("reason",) if inner.reasoning_adapter else DECODE_METHODS
        self._queues: dict[tuple[Any, ...], deque[_Job]] = {}
        self._decode_queue: deque[tuple[_Job, int]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="reasonrec-batcher", daemon=True)
        self._thread.start()

    # ---- the Engine protocol ---------------------------------------------------------------------------------

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        return self._call("reason", [(t,) for t in user_texts], (max_new_tokens,))

    def generate(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], max_new_tokens: int, stop: str
    ) -> list[Generation]:
        rows = list(zip(user_texts, assistant_prefixes, strict=True))
        return self._call("generate", rows, (max_new_tokens, stop))

    def choice_probs(
        self, user_texts: Sequence[str], assistant_prefixes: Sequence[str], choices: Sequence[str]
    ) -> np.ndarray:
        return self._call("choice_probs", list(zip(user_texts, assistant_prefixes, strict=True)), (tuple(choices),))

    def embed_direct(self, user_texts: Sequence[str]) -> np.ndarray:
        return self._call("embed_direct", [(t,) for t in user_texts], ())

    def embed_items(self, item_texts: Sequence[str]) -> np.ndarray:
        return self._call("embed_items", [(t,) for t in item_texts], ())

    # ---- submitting ------------------------------------------------------------------------------------------

    def submit(
        self, method: str, rows: list[tuple[Any, ...]], params: tuple[Any, ...], deadline: Deadline | None = None
    ) -> Future[Any]:
        """Queue a call; the future resolves to the inner method's output for these rows (list or array)."""
        job = _Job(method, params, rows, deadline)
        with self._cond:
            if self._closed:
                raise EngineClosed("the batching engine is closed")
            if self._decoder is not None and method in self._decode_methods:
                job.results = [None] * len(rows)
                self._decode_queue.extend((job, i) for i in range(len(rows)))
            else:
                self._queues.setdefault((method, *params), deque()).append(job)
            self._cond.notify()
        return job.future

    def pending(self) -> int:
        """Calls queued and not started yet."""
        with self._cond:
            decode_jobs = {id(job) for job, _ in self._decode_queue}
            return len(decode_jobs) + sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        """Refuse new calls, fail the queued ones (`EngineClosed`) and stop the worker once its current batch or
        decode step is over (the rows still decoding then fail too)."""
        with self._cond:
            self._closed = True
            queued = self._drain()
            self._cond.notify()
        self._fail(queued)
        self._thread.join(timeout=60)

    def _drain(self) -> list[_Job]:
        """Under the lock: every queued call (a decode call once, even if some rows already ran); queues emptied."""
        jobs = [job for queue in self._queues.values() for job in queue]
        jobs += list({id(job): job for job, _ in self._decode_queue}.values())
        self._queues.clear()
        self._decode_queue.clear()
        return jobs

    def _call(self, method: str, rows: list[tuple[Any, ...]], params: tuple[Any, ...]) -> Any:
        if not rows:
            return getattr(self.inner, method)(*([] for _ in range(self._arity(method))), *params)
        return self.submit(method, rows, params, current_deadline.get()).result()

    @staticmethod
    def _arity(method: str) -> int:
        return 2 if method in ("generate", "choice_probs") else 1

    # ---- the worker ------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._serve()
        except Exception:  # a bug here must not leave callers waiting forever
            log.exception("the batching engine's worker crashed; failing every call")
            with self._cond:
                self._closed = True
                queued = self._drain()
            self._fail(queued)
        if self._decoder is not None:
            self._fail([row.tag[0] for row in self._decoder.rows])
            self._decoder.reset()

    def _serve(self) -> None:
        while True:
            with self._cond:
                work = self._wait_for_work()
            if work is None:
                return
            jobs, rows = work
            if jobs:
                self._run_jobs(jobs)
            if rows:
                self._admit(rows)
            if self._decoder is not None and len(self._decoder):
                self._step()

    def _wait_for_work(self) -> tuple[list[_Job], list[DecodeRow]] | None:
        """Under the lock: the next per-request batch and the rows to admit now (either may be empty), or None
        once closed. Waits while there is nothing to do, or only calls whose window is still open."""
        while not self._closed:
            now = time.monotonic()
            self._drop_expired(now)
            jobs, rows = self._take_jobs(now), self._take_rows(now)
            if jobs or rows or (self._decoder is not None and len(self._decoder)):
                return jobs, rows
            self._cond.wait(self._idle_wait(now))
        return None

    def _take_jobs(self, now: float) -> list[_Job]:
        """The due queue with the oldest call: its calls, FIFO, up to `max_batch` rows (at least one call)."""
        while True:
            due = [
                (queue[0].submitted, key) for key, queue in self._queues.items()
                if now >= queue[0].submitted + self.window_s or sum(len(j.rows) for j in queue) >= self.max_batch
            ]
            if not due:
                return []
            key = min(due)[1]
            queue, jobs, n = self._queues[key], [], 0
            while queue and (not jobs or n + len(queue[0].rows) <= self.max_batch):
                job = queue.popleft()
                if self._start(job, now):
                    jobs.append(job)
                    n += len(job.rows)
            if not queue:
                del self._queues[key]
            if jobs:
                return jobs

    def _take_rows(self, now: float) -> list[DecodeRow]:
        """Queued decode rows that fit into the running batch; an idle batch waits for the window or a full batch."""
        queue = self._decode_queue
        if self._decoder is None or not queue:
            return []
        active = len(self._decoder)
        if active == 0 and len(queue) < self.max_batch and now < queue[0][0].submitted + self.window_s:
            return []
        rows: list[DecodeRow] = []
        while queue and active + len(rows) < self.max_batch:
            job, i = queue.popleft()
            if (i == 0 and not self._start(job, now)) or job.future.done():
                continue  # cancelled, or failed while its first rows ran: skip its rows
            user_text, prefix = job.rows[i] if job.method == "generate" else (job.rows[i][0], "")
            max_new_tokens, stop = job.params if job.method == "generate" else (job.params[0], ANSWER_MARKER)
            rows.append(DecodeRow(job.method, user_text, prefix, max_new_tokens, stop, tag=(job, i)))
        return rows

    def _drop_expired(self, now: float) -> None:
        """Fail every queued call whose deadline has passed (`DeadlineExpired`) and forget cancelled ones, so
        they hold no queue place and their callers are released at once, not when the batch has room."""
        for key, queue in list(self._queues.items()):
            kept = deque(job for job in queue if not self._expire(job, now))
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        if self._decode_queue:
            self._decode_queue = deque(entry for entry in self._decode_queue if not self._expire(entry[0], now))

    def _expire(self, job: _Job, now: float) -> bool:
        """True when `job` is to be dropped: cancelled, failed, or unstarted with its deadline passed."""
        if job.future.running():
            return False
        if job.future.done():
            return True
        if job.deadline is None or not job.deadline.expired(now):
            return False
        self.stats.expired += 1
        self.observer.engine_expired(job.method)
        job.future.set_exception(DeadlineExpired(f"{job.method}: the deadline passed while it was queued"))
        return True

    def _start(self, job: _Job, now: float) -> bool:
        """Mark a call as started (False if it was cancelled meanwhile) and report how long it waited."""
        if not job.future.set_running_or_notify_cancel():
            return False
        self.observer.engine_queued(job.method, now - job.submitted)
        return True

    def _idle_wait(self, now: float) -> float | None:
        """Seconds until the oldest queued call's window closes (None: nothing queued, wait for a call)."""
        oldest = [queue[0].submitted for queue in self._queues.values()]
        if self._decode_queue:
            oldest.append(self._decode_queue[0][0].submitted)
        return max(0.0, min(oldest) + self.window_s - now) if oldest else None

    def _count(self, method: str, rows: int) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.max_rows = max(self.stats.max_rows, rows)
        self.observer.engine_batch(method, rows)

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """One call of the inner engine for all rows of `jobs`; each job gets its own slice of the output."""
        method, params = jobs[0].method, jobs[0].params
        rows = [row for job in jobs for row in job.rows]
        self._count(method, len(rows))
        try:
            columns = [list(column) for column in zip(*rows, strict=True)]
            out = getattr(self.inner, method)(*columns, *params)
        except Exception as exc:
            for job in jobs:
                job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            job.future.set_result(out[start : start + len(job.rows)])
            start += len(job.rows)

    def _admit(self, rows: list[DecodeRow]) -> None:
        assert self._decoder is not None
        try:
            self._decoder.admit(rows)
        except Exception as exc:
            self._fail_rows(rows, exc)

    def _step(self) -> None:
        assert self._decoder is not None
        self._count("decode", len(self._decoder))
        try:
            finished = self._decoder.step()
        except Exception as exc:
            self._fail_rows(self._decoder.rows, exc)
            self._decoder.reset()
            return
        for row, result in finished:
            job, i = row.tag
            job.results[i] = result
            if not job.future.done() and all(r is not None for r in job.results):
                job.future.set_result(job.results)

    @staticmethod
    def _fail_rows(rows: list[DecodeRow], exc: BaseException) -> None:
        for row in rows:
            job = row.tag[0]
            if not job.future.done():
                job.future.set_exception(exc)

    @staticmethod
    def _fail(jobs: list[_Job]) -> None:
        closed = EngineClosed("the batching engine was closed before this call finished")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(closed)
