"""`direct_states_of_cuts`: the states of every cut of a window from one shared forward equal `embed_direct` of each
cut's own prompt; cuts whose token boundary does not match fall back to a full pass."""

from __future__ import annotations

import numpy as np
import pytest

import model.engines.cut_states as cut_states
from model.prompts import HistoryLine, user_prompt

TITLES = [
    "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Big (1988)", "Fargo (1996)",
    "Star Wars: Episode IV - A New Hope (1977)", "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "Being John Malkovich (1999)", "Princess Bride, The (1987)", "Sixth Sense, The (1999)", "Matrix, The (1999)",
]
T0 = 956_703_932  # 2000-04-25, an ML-1M-like unix time


def window(n: int, seed: int = 0) -> list[HistoryLine]:
    """n history lines with titles, ratings and timestamps (a few without rating or time)."""
    return [
        HistoryLine(
            TITLES[(seed * 5 + 3 * j) % len(TITLES)],
            None if (seed + j) % 7 == 6 else float(1 + (seed + 2 * j) % 5),
            None if (seed + j) % 9 == 8 else T0 + 86_400 * (3 * j + seed),
        )
        for j in range(n)
    ]


def reference(engine, history: list[HistoryLine], cuts: list[int]) -> np.ndarray:
    return engine.embed_direct([user_prompt(history[:k]) for k in cuts])


def assert_close(got: np.ndarray, want: np.ndarray, min_cosine: float, max_abs: float) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= min_cosine, cosine
    assert np.abs(got - want).max() <= max_abs


WINDOWS = [(20, [1, 5, 10, 20]), (7, [7, 1, 3, 3]), (1, [1]), (13, [2, 13, 6, 12, 1]), (20, [20])]


def test_cut_states_equal_embed_direct_of_each_prompt(tiny_engine):
    histories = [window(n, seed) for seed, (n, _) in enumerate(WINDOWS)]
    cuts = [c for _, c in WINDOWS]
    before = dict(tiny_engine.stats)
    states = tiny_engine.direct_states_of_cuts(histories, cuts)
    assert len(states) == len(WINDOWS)
    for history, window_cuts, got in zip(histories, cuts, states, strict=True):
        assert_close(got, reference(tiny_engine, history, window_cuts), 0.9999, 1e-4)
    assert tiny_engine.stats["cut_shortcut"] - before["cut_shortcut"] == sum(len(c) for c in cuts)
    assert tiny_engine.stats["cut_full_pass"] == before["cut_full_pass"]


@pytest.mark.parametrize("windows_per_pass", [1, 3])
def test_grouping_of_windows_does_not_change_states(tiny_engine, windows_per_pass):
    histories = [window(n, seed) for seed, (n, _) in enumerate(WINDOWS)]
    cuts = [c for _, c in WINDOWS]
    grouped = tiny_engine.direct_states_of_cuts(histories, cuts, windows_per_pass=windows_per_pass)
    alone = [tiny_engine.direct_states_of_cuts([h], [c])[0] for h, c in zip(histories, cuts, strict=True)]
    for got, want in zip(grouped, alone, strict=True):
        assert_close(got, want, 0.9999, 1e-4)


def test_boundary_check():
    window_ids, closing = [1, 2, 3, 4, 5], [8, 9]
    assert cut_states.boundary_matches([1, 2, 3, 8, 9], window_ids, closing) == 3
    assert cut_states.boundary_matches([1, 2, 3, 4, 5, 8, 9], window_ids, closing) == 5
    assert cut_states.boundary_matches([1, 2, 7, 8, 9], window_ids, closing) is None  # merged across the line end
    assert cut_states.boundary_matches([1, 2, 3, 7, 9], window_ids, closing) is None  # closing tokenized otherwise
    assert cut_states.boundary_matches([8, 9], window_ids, closing) is None


def test_real_tokenizations_match_at_every_line_end(tiny_engine):
    history = window(20, seed=3)
    plan = cut_states.plan_window(tiny_engine.tokenizer, history, range(1, 21))
    assert None not in plan.prefix_lengths
    assert plan.prefix_lengths == sorted(plan.prefix_lengths) and plan.prefix_lengths[-1] == len(plan.window_ids)


def test_cuts_failing_the_boundary_check_take_a_full_pass(tiny_engine, monkeypatch):
    histories = [window(13, seed=1), window(5, seed=2)]
    cuts = [[1, 3, 13, 7], [3, 5]]
    failing = [[3, 13], [3]]  # these cuts pretend a BPE merge across the end of their line
    fail_at = set()  # (window length in tokens, cut's prefix length): unique per window and cut
    for history, window_failing in zip(histories, failing, strict=True):
        plan = cut_states.plan_window(tiny_engine.tokenizer, history, window_failing)
        fail_at |= {(len(plan.window_ids), m) for m in plan.prefix_lengths}
    real = cut_states.boundary_matches

    def flaky(cut_ids, window_ids, closing_ids):
        m = real(cut_ids, window_ids, closing_ids)
        return None if (len(window_ids), m) in fail_at else m

    monkeypatch.setattr(cut_states, "boundary_matches", flaky)
    before = dict(tiny_engine.stats)
    states = tiny_engine.direct_states_of_cuts(histories, cuts)
    assert tiny_engine.stats["cut_full_pass"] - before["cut_full_pass"] == 3
    assert tiny_engine.stats["cut_shortcut"] - before["cut_shortcut"] == 3
    for history, window_cuts, got in zip(histories, cuts, states, strict=True):
        assert_close(got, reference(tiny_engine, history, window_cuts), 0.9999, 1e-4)


def test_a_window_with_no_shortcut_at_all(tiny_engine, monkeypatch):
    monkeypatch.setattr(cut_states, "boundary_matches", lambda *args: None)
    history = window(4)
    got = tiny_engine.direct_states_of_cuts([history], [[4, 2]])[0]
    assert_close(got, reference(tiny_engine, history, [4, 2]), 0.9999, 1e-4)


@pytest.mark.parametrize("n, cuts", [(4, [0]), (4, [5]), (21, [1])])
def test_bad_cuts_are_rejected(tiny_engine, n, cuts):
    with pytest.raises(ValueError):
        tiny_engine.direct_states_of_cuts([window(n)], [cuts])


@pytest.mark.slow
def test_real_smollm2_window_of_20_lines(real_engine):
    history = window(20, seed=4)
    cuts = [1, 5, 10, 20]
    got = real_engine.direct_states_of_cuts([history], [cuts])[0]
    assert_close(got, reference(real_engine, history, cuts), 0.999, 1e-2 * float(np.abs(got).max()))
