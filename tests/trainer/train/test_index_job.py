"""The index job on the tiny model: builds, resumes after an interruption, and is a no-op when up to date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.store import ItemStore
from model.engines.transformers_engine import TransformersEngine
from trainer.protocol.genre_overlap import genre_overlap
from trainer.train.index import IndexJobConfig, build_index

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def write_ml1m_folder(root: Path, n_movies: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    movies = [f"{i}::Movie number {i} ({1980 + i % 20})::{GENRES[i % 5]}|{GENRES[(i * 3) % 5]}"
              for i in range(1, n_movies + 1)]
    ratings = [f"{u}::{i}::{1 + (u + i) % 5}::{978300000 + u * 1000 + i}"
               for u in range(1, 6) for i in range(1, n_movies + 1, 3)]
    users = [f"{u}::F::25::10::48067" for u in range(1, 6)]
    for name, lines in (("movies.dat", movies), ("ratings.dat", ratings), ("users.dat", users)):
        (root / name).write_text("\n".join(lines) + "\n", encoding="latin-1")
    return root


class FailingAfter:
    """Fault injection: an engine whose item encoding dies after `calls` batches (like a killed job)."""

    def __init__(self, engine: TransformersEngine, calls: int) -> None:
        self._engine, self._left = engine, calls
        self.fingerprint = engine.fingerprint

    def embed_items(self, texts):
        if self._left == 0:
            raise KeyboardInterrupt("interrupted")
        self._left -= 1
        return self._engine.embed_items(texts)


class CountingEngine(FailingAfter):
    def __init__(self, engine: TransformersEngine) -> None:
        super().__init__(engine, calls=10**9)
        self.encoded = 0

    def embed_items(self, texts):
        self.encoded += len(texts)
        return super().embed_items(texts)


@pytest.fixture()
def config(tmp_path) -> IndexJobConfig:
    data = write_ml1m_folder(tmp_path / "ml-1m")
    return IndexJobConfig(dataset="ml-1m-zip", data_path=data, out_dir=tmp_path / "index", chunk_size=8)


def test_build_resume_and_noop(tiny_engine, config, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build_index(config, FailingAfter(tiny_engine, calls=2))  # 2 chunks of 8 written, then dies
    assert not ItemStore.exists(config.out_dir)
    partial = config.out_dir.with_name("index.partial")
    assert sorted(p.name for p in partial.glob("chunk-*.npy")) == ["chunk-00000.npy", "chunk-00001.npy"]

    counting = CountingEngine(tiny_engine)
    result = build_index(config, counting)
    assert counting.encoded == 40 - 16 and result.encoded == 24 and result.items == 40 and not result.skipped
    assert not partial.exists()

    store = ItemStore.load(config.out_dir, expect=tiny_engine.fingerprint)
    assert len(store) == 40 and store.manifest.dataset == "ml-1m-zip" and store.manifest.centered

    fresh = IndexJobConfig(**{**config.__dict__, "out_dir": tmp_path / "fresh"})
    build_index(fresh, tiny_engine)
    ids = store.catalog.ids()
    np.testing.assert_allclose(store.vectors_of(ids), ItemStore.load(fresh.out_dir).vectors_of(ids), atol=1e-5)

    again = CountingEngine(tiny_engine)
    assert build_index(config, again).skipped and again.encoded == 0


def test_partial_chunks_from_another_model_are_discarded(tiny_engine, config):
    partial = config.out_dir.with_name("index.partial")
    partial.mkdir(parents=True)
    (partial / "job.json").write_text('{"fingerprint": "someone else"}')
    np.save(partial / "chunk-00000.npy", np.zeros((8, tiny_engine.hidden_size), dtype=np.float32))
    counting = CountingEngine(tiny_engine)
    build_index(config, counting)
    assert counting.encoded == 40


def test_genre_overlap_figure(tiny_engine, config):
    build_index(config, tiny_engine)
    overlap = genre_overlap(ItemStore.load(config.out_dir), k=5)
    assert overlap is not None and overlap.items == 40 and overlap.k == 5
    assert 0.0 < overlap.random < 1.0 and 0.0 < overlap.neighbours <= 1.0
    assert "x over 40 items" in overlap.describe()


def test_config_names_the_bad_flag():
    with pytest.raises(ValueError, match="--kind"):
        IndexJobConfig(kind="annoy")
    with pytest.raises(ValueError, match="--dataset"):
        IndexJobConfig(dataset="netflix")


def test_genre_overlap_separates_genre_vectors_from_noise(tiny_engine):
    from indexer.core.catalog import Catalog, Item

    rng = np.random.default_rng(0)
    items = [Item(str(i), f"m{i}", (GENRES[i % 5], GENRES[(i // 5) % 5])) for i in range(200)]
    indicator = np.array([[g in item.genres for g in GENRES] for item in items], dtype=np.float32)
    noise = rng.normal(size=(200, 16)).astype(np.float32)
    def overlap(vectors):
        store = ItemStore.create(Catalog.of(items), vectors, tiny_engine.fingerprint, center=False)
        return genre_overlap(store, k=10)
    informed = overlap(np.hstack([indicator * 5, noise * 0.1]))
    blind = overlap(noise)
    assert informed.ratio > 2.0
    assert 0.7 < blind.ratio < 1.3
