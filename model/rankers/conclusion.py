"""The reasoning's conclusion as a score term: what the taught reasoning concludes ("Probably a 1990s Comedy next",
read by `model.claims.parse`) adds `genre` to every item of the concluded genre and `decade` to every item of the
concluded decade, on top of the table's score u . v + b. The reasoning-then-recommendation order follows R2ec
("Towards Large Recommender Models with Reasoning"); reading the conclusion instead of (or beside) the state is
this project's way to let a 135M model's reasoning shape the list in a measurable way.

The weights are learned on validation users (`reasonrec train-conclusion`) and saved beside the reasoning adapter
(`conclusion.json`); both are non-negative, so the term is an additive bonus bounded by their sum and the search
stays exact (`indexer.store.ItemStore.search`'s `terms`). Weights of zero are a term that adds nothing: the ranker
says so (and still shows what the reasoning concluded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from indexer.core.catalog import Catalog
from indexer.core.durable import replace_text
from model.claims import Prediction, parse, prediction_matches

CONCLUSION_FILE = "conclusion.json"
"""Beside a reasoning adapter: the term's weights and the run that chose them."""


@dataclass(frozen=True)
class ConclusionTerm:
    """The score an item gains when it is of the concluded genre (`genre`) and decade (`decade`)."""

    genre: float = 0.0
    decade: float = 0.0

    def __post_init__(self) -> None:
        if self.genre < 0 or self.decade < 0:
            raise ValueError(f"conclusion weights must be >= 0 (an exact search needs a bounded bonus), got {self}")

    @property
    def is_zero(self) -> bool:
        return self.genre == 0 and self.decade == 0

    def bonus(self, prediction: Prediction | None, catalog: Catalog) -> dict[str, float]:
        """Each catalog item's bonus under `prediction` (items that gain nothing are left out)."""
        if prediction is None or self.is_zero:
            return {}
        out = {}
        for item in catalog:
            genre, decade = prediction_matches(prediction, item)
            gain = self.genre * genre + self.decade * decade
            if gain:
                out[item.item_id] = gain
        return out

    def save(self, folder: Path, meta: Mapping[str, object]) -> None:
        replace_text(folder / CONCLUSION_FILE, json.dumps({**asdict(self), "meta": dict(meta)}, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ConclusionTerm:
        """The term saved beside an adapter; zero when there is none."""
        path = folder / CONCLUSION_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(data["genre"]), float(data["decade"]))


def conclusion(text: str | None, catalog: Catalog) -> Prediction | None:
    """The prediction a reasoning text closes with (genre names in the catalog's spelling), None without one."""
    if not text:
        return None
    genres = {g.lower(): g for item in catalog for g in item.genres}
    return parse(text, genres).prediction
