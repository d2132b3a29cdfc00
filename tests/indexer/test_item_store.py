"""ItemStore: versioned writes, atomic saves that survive a crash at any step, pruning, fingerprint checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import faiss
import numpy as np
import pytest

import indexer.store
from indexer.core.catalog import Item
from indexer.core.fingerprint import ManifestMismatchError
from indexer.errors import CorruptIndexError, DuplicateItemError, IndexNotFoundError, UnknownItemError
from indexer.index import IndexOptions
from indexer.store import ItemStore


@pytest.fixture
def store(catalog, vectors, fingerprint) -> ItemStore:
    return ItemStore.create(catalog, vectors, fingerprint, dataset="ml-test")


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "versions").iterdir())


def current(root: Path) -> str:
    return (root / "CURRENT").read_text().strip()


def test_create_indexes_the_catalog_in_order(store, catalog, vectors, fingerprint):
    manifest = store.manifest
    shape = (manifest.version, manifest.count, manifest.dim, manifest.kind, manifest.centered)
    assert shape == (1, 200, 32, "flat", True)
    assert manifest.fingerprint == fingerprint and manifest.dataset == "ml-test"
    assert len(store) == 200 and store.get("item3") == catalog["item3"] and store.get("nope") is None
    [result] = store.search(vectors[3:4], k=1)
    assert result == [("item3", pytest.approx(1.0, abs=1e-5))]


def test_add_and_remove_bump_the_version(store, make_items, rng):
    new = make_items(2, start=500)
    after_add = store.add_items(new, rng.standard_normal((2, 32)) + 3.0)
    assert (after_add.version, after_add.count) == (2, 202) and store.manifest == after_add
    assert store.get("item500") == new[0] and "item501" in store.catalog
    after_remove = store.remove_item("item500")
    assert (after_remove.version, after_remove.count) == (3, 201)
    assert store.get("item500") is None and len(store) == 201
    assert len({store.manifest.version_id, after_add.version_id}) == 2


def test_failed_writes_change_nothing(store, make_items, rng):
    before = store.manifest
    catalog_before = store.catalog
    with pytest.raises(DuplicateItemError, match="'item1'"):
        store.add_items(make_items(2, start=199) + make_items(1, start=1), rng.standard_normal((3, 32)))
    with pytest.raises(UnknownItemError, match="'ghost'"):
        store.remove_item("ghost")
    with pytest.raises(ValueError, match="NaN"):
        store.add_items(make_items(1, start=900), np.full((1, 32), np.nan))
    assert store.manifest == before and store.catalog is catalog_before and len(store) == 200
    assert store.get("item200") is None


def test_upsert_replaces_item_and_vector(store, rng):
    renamed = Item("item7", "A new title")
    target = rng.standard_normal((1, 32)) + 3.0
    store.add_items([renamed], target, upsert=True)
    assert store.get("item7") == renamed and len(store) == 200
    assert store.search(target, 1)[0][0] == ("item7", pytest.approx(1.0, abs=1e-5))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip_gives_identical_results(tmp_path, catalog, vectors, fingerprint, rng, kind):
    options = IndexOptions(nlist=4, nprobe=2, hnsw_m=8, ef_construction=32, ef_search=16)
    store = ItemStore.create(catalog, vectors, fingerprint, kind=kind, options=options)
    folder = store.save(tmp_path)
    loaded = ItemStore.load(tmp_path, expect=fingerprint)
    queries = rng.standard_normal((10, 32)) + 3.0
    exclude = [{"item1", "item2"}] * 10
    assert loaded.search(queries, 20, exclude) == store.search(queries, 20, exclude)
    assert loaded.manifest == store.manifest and loaded.catalog == store.catalog
    assert folder == tmp_path / "versions" / store.manifest.version_id and current(tmp_path) == folder.name
    assert {p.name for p in folder.iterdir()} == {"index.faiss", "index.json", "center.npy", "catalog.jsonl",
                                                  "manifest.json"}


def test_hot_added_items_persist(tmp_path, store, make_items, rng):
    store.save(tmp_path)
    new_vectors = rng.standard_normal((3, 32)) + 3.0
    store.add_items(make_items(3, start=1000), new_vectors)
    store.remove_item("item0")
    store.save(tmp_path)
    loaded = ItemStore.load(tmp_path)
    assert loaded.manifest.version == 3 and len(loaded) == 202
    assert loaded.get("item1001") == make_items(1, start=1001)[0] and loaded.get("item0") is None
    assert loaded.search(new_vectors, 1) == store.search(new_vectors, 1)
    assert [r[0][0] for r in loaded.search(new_vectors, 1)] == ["item1000", "item1001", "item1002"]
    # an item hot-added after the reload is encoded and ranked exactly as in the original store
    later, queries = rng.standard_normal((1, 32)) + 3.0, rng.standard_normal((5, 32)) + 3.0
    for s in (store, loaded):
        s.add_items(make_items(1, start=2000), later)
    assert loaded.search(queries, 10) == store.search(queries, 10)


def test_a_failed_index_write_leaves_the_previous_version(tmp_path, store, make_items, rng, monkeypatch):
    store.save(tmp_path)
    old = store.manifest
    store.add_items(make_items(1, start=300), rng.standard_normal((1, 32)))

    def broken_write(*args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path)
    assert current(tmp_path) == old.version_id and versions(tmp_path) == [old.version_id]  # no temp folder left
    loaded = ItemStore.load(tmp_path)
    assert loaded.manifest == old and "item300" not in loaded.catalog
    monkeypatch.undo()
    store.save(tmp_path)
    assert ItemStore.load(tmp_path).manifest == store.manifest


def test_a_crash_before_current_moves_leaves_the_previous_version(tmp_path, store, make_items, rng, monkeypatch):
    store.save(tmp_path)
    old = store.manifest
    store.add_items(make_items(1, start=300), rng.standard_normal((1, 32)))

    def crash(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(indexer.store, "replace_text", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(tmp_path)
    assert store.manifest.version_id in versions(tmp_path)  # the new folder is complete, but not current
    assert ItemStore.load(tmp_path).manifest == old


def test_old_versions_are_pruned(tmp_path, store, make_items, rng):
    saved = []
    for i in range(5):
        store.add_items(make_items(1, start=400 + i), rng.standard_normal((1, 32)))
        saved.append(store.save(tmp_path, keep=3).name)
    assert versions(tmp_path) == sorted(saved[-3:]) and current(tmp_path) == saved[-1]
    assert store.save(tmp_path, keep=3).name == saved[-1]  # unchanged: same version, nothing rewritten
    assert versions(tmp_path) == sorted(saved[-3:])


def test_fingerprint_mismatch_refuses_to_load(tmp_path, store, fingerprint):
    store.save(tmp_path)
    other = dataclasses.replace(fingerprint, adapter_hash="cl-lora-1")
    with pytest.raises(ManifestMismatchError, match=r"adapter_hash=None but the model has adapter_hash='cl-lora-1'"):
        ItemStore.load(tmp_path, expect=other)
    with pytest.raises(ManifestMismatchError, match=str(tmp_path)):
        ItemStore.load(tmp_path, expect=dataclasses.replace(fingerprint, template_version="t9"))


def test_missing_and_corrupt_indexes_raise_naming_the_path(tmp_path, store):
    assert not ItemStore.exists(tmp_path)
    with pytest.raises(IndexNotFoundError, match=f"no index at {tmp_path}"):
        ItemStore.load(tmp_path)
    folder = store.save(tmp_path)
    assert ItemStore.exists(tmp_path)
    index_file = folder / "index.faiss"
    good = index_file.read_bytes()
    index_file.write_bytes(good[:1000])
    with pytest.raises(CorruptIndexError, match=str(index_file)):
        ItemStore.load(tmp_path)
    index_file.write_bytes(good)
    (folder / "catalog.jsonl").unlink()
    with pytest.raises(CorruptIndexError, match="catalog.jsonl"):
        ItemStore.load(tmp_path)
    (tmp_path / "CURRENT").write_text("v000099-deadbeef\n")
    assert not ItemStore.exists(tmp_path)
    with pytest.raises(CorruptIndexError, match="v000099-deadbeef, which does not exist"):
        ItemStore.load(tmp_path)


def test_catalog_and_index_must_agree(tmp_path, store):
    folder = store.save(tmp_path)
    lines = (folder / "catalog.jsonl").read_text().splitlines()
    (folder / "catalog.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CorruptIndexError, match="catalog and index hold different item ids"):
        ItemStore.load(tmp_path)
