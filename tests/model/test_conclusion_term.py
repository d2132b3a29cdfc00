"""The conclusion term: the genre and decade a reasoning concludes raise the catalog's items of that genre and
decade by the learned weights; the term is read from the text with the taught reasoning's own templates, saved
beside the adapter, and refuses negative weights (the exact search needs a bounded bonus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.core.catalog import Catalog, Item
from model.claims import Prediction
from model.rankers.conclusion import ConclusionTerm, conclusion


@pytest.fixture
def films() -> Catalog:
    return Catalog.of([
        Item("1", "Toy Story", ("Animation", "Comedy"), 1995), Item("2", "Heat", ("Action", "Crime"), 1995),
        Item("3", "Airplane!", ("Comedy",), 1980), Item("4", "Alien", ("Horror", "Sci-Fi"), 1979),
    ])


def test_the_conclusion_is_read_with_the_catalogs_genre_names(films):
    text = "Top genres: comedy, Action. Usually rates 4. Probably a 1990s comedy next"
    assert conclusion(text, films) == Prediction("Comedy", 1990)
    assert conclusion("Mostly Comedy", films) is None and conclusion(None, films) is None


def test_the_bonus_adds_each_weight_to_the_items_it_names(films):
    term = ConclusionTerm(genre=0.5, decade=0.25)
    assert term.bonus(Prediction("Comedy", 1990), films) == {"1": 0.75, "2": 0.25, "3": 0.5}
    assert term.bonus(Prediction(None, 1970), films) == {"4": 0.25}
    assert term.bonus(None, films) == {} and ConclusionTerm().bonus(Prediction("Comedy", 1990), films) == {}
    assert ConclusionTerm().is_zero and not term.is_zero


def test_the_term_is_saved_beside_the_adapter_and_zero_without_one(tmp_path: Path):
    ConclusionTerm(1.5, 0.0).save(tmp_path, {"command": "test"})
    assert ConclusionTerm.load(tmp_path) == ConclusionTerm(1.5, 0.0)
    assert ConclusionTerm.load(tmp_path / "none").is_zero
    with pytest.raises(ValueError, match=">= 0"):
        ConclusionTerm(-0.1, 0.0)
