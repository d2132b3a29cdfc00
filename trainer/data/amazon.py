"""Amazon Reviews 2023 (Hou et al., "Bridging Language and Items for Retrieval and Recommendation", 2024) in its
jsonl layout: one reviews file and one `meta_` file per category, read as a `Dataset`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

from indexer.core.catalog import Item
from trainer.data.datasets import (
    DataFormatError,
    Dataset,
    Interaction,
    gc_paused,
    make_dataset,
    parse_int,
    parse_number,
)

_YEAR_DETAILS = ("Date First Available", "Release date", "Publication date", "Original Release Date", "Year")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


def _amazon_files(folder: Path) -> tuple[Path, Path]:
    """The one reviews file and the one `meta_` file (`.jsonl` or `.jsonl.gz`) in `folder`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"amazon2023 needs a folder with a reviews and a meta_ jsonl file: {folder}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    meta = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(meta) != 1 or len(reviews) != 1:
        raise FileNotFoundError(f"{folder} must hold exactly one reviews file (NAME.jsonl[.gz]) and one meta "
                                f"file (meta_NAME.jsonl[.gz]); found reviews {[p.name for p in reviews]}, "
                                f"meta {[p.name for p in meta]}")
    return reviews[0], meta[0]


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """JSON objects of a (maybe gzipped) jsonl file, streamed, with their line numbers; blank lines skipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(path, line_no, f"bad JSON: {exc}") from exc
                if not isinstance(record, dict):
                    raise DataFormatError(path, line_no, f"expected a JSON object, got {type(record).__name__}")
                yield line_no, record
        except (UnicodeDecodeError, EOFError, OSError) as exc:  # bad UTF-8, truncated or corrupt gzip
            raise DataFormatError(path, line_no + 1, f"unreadable line: {exc}") from exc


def _field(record: dict, key: str) -> object:
    if key not in record:
        raise ValueError(f"missing field {key!r}")
    return record[key]


def _text(record: dict, key: str) -> str:
    value = _field(record, key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _details_year(details: object) -> int | None:
    """The year of the first date-like entry of `details` (e.g. "Date First Available": "March 5, 2019")."""
    dates = [str(details.get(key, "")) for key in _YEAR_DETAILS] if isinstance(details, dict) else []
    match = next(filter(None, map(_YEAR.search, dates)), None)
    return int(match.group(1)) if match else None


def _amazon_item(record: dict) -> Item:
    """genres = categories (or [main_category] when that list is empty); description = its strings joined."""
    asin = _text(record, "parent_asin")
    title = record.get("title")
    categories = record.get("categories") or ([record["main_category"]] if record.get("main_category") else [])
    description = record.get("description") or []
    parts = [description] if isinstance(description, str) else description
    text = " ".join(str(part).strip() for part in parts if str(part).strip())
    return Item(asin, title if isinstance(title, str) and title.strip() else asin, tuple(map(str, categories)),
                _details_year(record.get("details")), description=text or None)


def _amazon_review(record: dict) -> Interaction:
    """A review as an interaction; the timestamp is in milliseconds and becomes seconds."""
    return Interaction(_text(record, "user_id"), _text(record, "parent_asin"),
                       parse_number(str(_field(record, "rating")), "rating"),
                       parse_int(_field(record, "timestamp"), "timestamp") // 1000)


@gc_paused
def load_amazon2023(folder: Path) -> Dataset:
    """Amazon Reviews 2023: item_id = parent_asin; timestamps ms -> s; the year from `details` when a date
    entry holds one; items reviewed but absent from the meta file become items titled by their asin."""
    reviews_path, meta_path = _amazon_files(folder)
    items: dict[str, Item] = {}
    for line_no, record in _jsonl(meta_path):
        try:
            item = _amazon_item(record)
        except (ValueError, TypeError) as exc:
            raise DataFormatError(meta_path, line_no, str(exc)) from exc
        if item.item_id in items:
            raise DataFormatError(meta_path, line_no, f"duplicate parent_asin {item.item_id!r}")
        items[item.item_id] = item
    interactions = []
    for line_no, record in _jsonl(reviews_path):
        try:
            interaction = _amazon_review(record)
        except ValueError as exc:
            raise DataFormatError(reviews_path, line_no, str(exc)) from exc
        items.setdefault(interaction.item_id, Item(interaction.item_id, interaction.item_id))
        interactions.append(interaction)
    return make_dataset("amazon2023", items.values(), interactions)
