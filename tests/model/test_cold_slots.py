"""The cold-slot gate (`model.rankers.cold_slots`): the best content-served items take the last places of the top k,
at most `max_slots`, each only within `margin` of the warm item it displaces (`exclusive`: new items are listed
through the slots only); off, the list is unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.rankers.cold_slots import ColdSlots

TOP = [("w1", 9.0), ("w2", 8.0), ("w3", 7.0), ("w4", 6.0)]
COLD = [("c1", 5.5), ("c2", 4.0), ("c3", 1.0)]
IS_COLD = {"c1", "c2", "c3"}


def test_the_gate_lifts_the_best_cold_items_into_the_last_places_within_its_margin() -> None:
    assert ColdSlots(2, 1.0).merge(TOP, COLD, 4, IS_COLD) == [("w1", 9.0), ("w2", 8.0), ("w3", 7.0), ("c1", 5.5)]
    # c2 (4.0) is 3.0 below w3 (7.0): a margin of 3 lifts it too, never beyond max_slots
    assert ColdSlots(2, 3.0).merge(TOP, COLD, 4, IS_COLD) == [("w1", 9.0), ("w2", 8.0), ("c1", 5.5), ("c2", 4.0)]
    assert ColdSlots(2, math.inf).merge(TOP, COLD, 4, IS_COLD)[-2:] == [("c1", 5.5), ("c2", 4.0)]
    assert ColdSlots(1, 0.1).merge(TOP, COLD, 4, IS_COLD) == TOP  # c1 is .5 below w4
    assert ColdSlots().merge(TOP, COLD, 4, IS_COLD) == TOP


def test_cold_items_already_in_the_list_stay_and_are_never_displaced() -> None:
    top = [("w1", 9.0), ("w2", 8.0), ("c1", 7.5), ("w3", 7.0)]
    gated = ColdSlots(3, math.inf).merge(top, [("c1", 7.5), ("c2", 4.0), ("c3", 1.0)], 4, IS_COLD)
    # c2 displaces w3; the next place up holds c1, a cold item, so the gate stops there
    assert gated == [("w1", 9.0), ("w2", 8.0), ("c1", 7.5), ("c2", 4.0)]
    short = [("w1", 9.0), ("c2", 4.0)]  # fewer than k candidates: all of them are already listed
    assert ColdSlots(2, math.inf).merge(short, [("c2", 4.0)], 4, IS_COLD) == short


def test_an_exclusive_gate_lists_new_items_through_its_slots_only() -> None:
    ids = [f"i{j}" for j in range(6)]
    scores = np.array([8.0, 9.5, 7.0, 6.0, 5.0, 4.0])
    cold = np.array([False, True, False, False, False, True])
    # i1 tops the calibrated scores, yet listed only through the slot: after the warm items, as the last place
    assert ColdSlots(1, math.inf, exclusive=True).top_k(scores, ids, cold, 3) == [("i0", 8.0), ("i2", 7.0),
                                                                                   ("i1", 9.5)]
    # not exclusive: i1 is listed by its score and the slot goes to the next new item
    assert ColdSlots(1, math.inf).top_k(scores, ids, cold, 3) == [("i1", 9.5), ("i0", 8.0), ("i5", 4.0)]
    few = ColdSlots(1, math.inf, exclusive=True).top_k(scores[:2], ids[:2], cold[:2], 3)
    assert few == [("i0", 8.0), ("i1", 9.5)]  # fewer warm items than k: new items fill the list


def test_the_gated_list_of_a_score_row_stays_sorted_and_respects_exclusions() -> None:
    ids = [f"i{j}" for j in range(8)]
    scores = np.array([8.0, 7.0, 6.0, 5.0, 4.0, 3.5, 3.0, 1.0])
    cold = np.array([False, False, False, False, False, True, True, True])
    gated = ColdSlots(2, math.inf).top_k(scores, ids, cold, 4, exclude={"i5"})
    assert gated == [("i0", 8.0), ("i1", 7.0), ("i6", 3.0), ("i7", 1.0)]
    assert [s for _, s in gated] == sorted((s for _, s in gated), reverse=True)


def test_the_manifest_form_keeps_an_infinite_margin_and_bad_values_are_refused() -> None:
    for slots in (ColdSlots(), ColdSlots(2, 0.5), ColdSlots(1, math.inf), ColdSlots(1, math.inf, exclusive=True)):
        assert ColdSlots.from_meta({"cold_slots": slots.to_meta()}) == slots
    assert ColdSlots.from_meta({}) == ColdSlots()
    with pytest.raises(ValueError, match="max_slots >= 0"):
        ColdSlots(-1, 0.0)
    with pytest.raises(ValueError, match="margin >= 0"):
        ColdSlots(1, float("nan"))
    with pytest.raises(ValueError, match="slots when exclusive"):
        ColdSlots(0, 0.0, exclusive=True)
