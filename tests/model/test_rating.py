"""Guided rating prediction and the RecZero format parser."""

from __future__ import annotations

import pytest

from model.rating.guided import parse_rating_output, predict_ratings

GOOD = ("<analyze user>likes sci-fi</analyze user>\n<analyze item>a space film</analyze item>\n<match>good</match>\n"
        "<rate>4</rate>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, 4),
        (GOOD.replace("<rate>4", "<rate>6"), None),
        (GOOD.replace("likes sci-fi", " "), None),
        (GOOD.replace("<match>good</match>\n", ""), None),
        ("<analyze item>x</analyze item><analyze user>y</analyze user><match>z</match><rate>3</rate>", None),
        (GOOD + "<rate>2</rate>", None),
        ("no tags at all", None),
    ],
)
def test_parse_rating_output(text, expected):
    assert parse_rating_output(text) == expected


def test_parse_direct_rating():
    assert parse_rating_output("<rate>5</rate>", require_reasoning=False) == 5
    assert parse_rating_output("<rate>5</rate><rate>4</rate>", require_reasoning=False) is None
    assert parse_rating_output("five", require_reasoning=False) is None


@pytest.mark.parametrize("reasoning", [True, False])
def test_guided_prediction_always_parses(tiny_engine, reasoning):
    predictions = predict_ratings(tiny_engine, ["user one", "user two"], reasoning=reasoning, max_tokens_per_tag=4)
    for p in predictions:
        assert 1.0 <= p.rating <= 5.0
        assert abs(sum(p.probabilities) - 1.0) < 1e-5
        likeliest = max(range(5), key=lambda i: p.probabilities[i]) + 1
        assert parse_rating_output(p.text, require_reasoning=reasoning) == likeliest
        assert (p.generated_tokens > 0) == reasoning


def test_stray_tags_written_by_the_model_are_cut_so_the_answer_parses():
    from model.rating.guided import tag_content

    assert tag_content(" likes space <analyze item> stray <rate>5</rate>") == "likes space"
    assert tag_content("<match>") == "-"
    assert tag_content("  plain text  ") == "plain text"
    assert tag_content("tastes</analyve user></analyze user>") == "tastes"
