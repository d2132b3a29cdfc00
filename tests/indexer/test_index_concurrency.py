"""Thread safety: the readers-writer lock, and searches racing with adds and removes on a shared ItemIndex."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from indexer.index import IndexOptions, ItemIndex
from indexer.rwlock import ReadWriteLock


def run_in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_readers_share_the_lock():
    lock = ReadWriteLock()
    second_reader_in = threading.Event()

    def second_reader():
        with lock.read():
            second_reader_in.set()

    with lock.read():
        run_in_thread(second_reader)
        assert second_reader_in.wait(timeout=5)


def test_writer_excludes_readers_and_goes_before_later_readers():
    lock = ReadWriteLock()
    order: list[str] = []

    def writer():
        with lock.write():
            order.append("writer")

    def late_reader():
        with lock.read():
            order.append("late reader")

    with lock.read():
        writer_thread = run_in_thread(writer)
        time.sleep(0.1)
        reader_thread = run_in_thread(late_reader)
        time.sleep(0.1)
        assert order == []  # the writer waits for the reader; the late reader waits behind the writer
    writer_thread.join(timeout=5)
    reader_thread.join(timeout=5)
    assert order == ["writer", "late reader"]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_searches_race_with_writes(kind):
    rng = np.random.default_rng(7)
    dim, k = 32, 10
    base = rng.standard_normal((400, dim)).astype(np.float32)
    extra = rng.standard_normal((120, dim)).astype(np.float32)
    base_ids = [f"b{i}" for i in range(len(base))]
    index = ItemIndex.build(base_ids, base, kind=kind, options=IndexOptions(hnsw_m=8, ef_construction=32))
    unit = {**dict(zip(base_ids, base, strict=False)), **{f"x{i}": v for i, v in enumerate(extra)}}
    unit = {item_id: v / np.linalg.norm(v) for item_id, v in unit.items()}
    base_unit = np.stack([unit[b] for b in base_ids])
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []
    searches = [0] * 4  # one counter per reader

    def writer():
        try:
            for start in range(0, len(extra), 4):
                index.add([f"x{i}" for i in range(start, start + 4)], extra[start:start + 4])
                if start >= 8:
                    index.remove([f"x{i}" for i in range(start - 8, start - 4)])
                time.sleep(0.002)  # let searches in between the writes
        except BaseException as exc:
            errors.append(exc)
        finally:
            writing.clear()

    def reader(seed: int):
        local = np.random.default_rng(seed)
        try:
            while writing.is_set():
                query = local.standard_normal((1, dim)).astype(np.float32)
                exclude = {f"b{i}" for i in local.choice(len(base), 5, replace=False)}
                [result] = index.search(query, k, exclude=[exclude])
                check(query[0] / np.linalg.norm(query[0]), result, exclude)
                searches[seed] += 1
        except BaseException as exc:
            errors.append(exc)

    def check(q: np.ndarray, result, exclude: set[str]):
        assert len(result) == k and not exclude & {item_id for item_id, _ in result}
        scores = [s for _, s in result]
        assert scores == sorted(scores, reverse=True)
        for item_id, score in result:  # every score belongs to the vector stored under that id
            assert score == pytest.approx(float(unit[item_id] @ q), abs=1e-4)
        if kind == "flat":  # base items are never removed, so the k-th result is at least the k-th base item
            allowed = [i for i, b in enumerate(base_ids) if b not in exclude]
            base_scores = np.sort(base_unit[allowed] @ q)[::-1]
            assert scores[-1] >= base_scores[k - 1] - 1e-5

    threads = [run_in_thread(lambda s=s: reader(s)) for s in range(4)] + [run_in_thread(writer)]
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]
    assert sum(searches) >= 20
    assert len(index) == len(base) + 8  # the last two batches of additions stay
