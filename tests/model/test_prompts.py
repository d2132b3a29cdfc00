"""Prompt templates: coarse ages, the history cap, item fields and the rating format."""

from __future__ import annotations

from indexer.catalog import Item
from model.prompts import (
    MAX_HISTORY_LINES,
    HistoryLine,
    coarse_age,
    direct_rating_prompt,
    item_prompt,
    rating_prompt,
    user_prompt,
)

DAY = 86400


def test_coarse_age_buckets():
    assert coarse_age(0) == "1h ago"
    assert coarse_age(5 * 3600 + 1700) == "5h ago"
    assert coarse_age(3 * DAY + 4 * 3600) == "3d ago"
    assert coarse_age(20 * DAY) == "2w ago"
    assert coarse_age(100 * DAY) == "3mo ago"
    assert coarse_age(3 * 365 * DAY) == "3y ago"


def test_user_prompt_keeps_the_twenty_most_recent_in_order_with_ages():
    history = [HistoryLine(f"Movie {i}", 4.0, 1000 + i * DAY) for i in range(30)]
    prompt = user_prompt(history, now=1000 + 40 * DAY)
    assert "Movie 9]" not in prompt and "Movie 10]" in prompt and "Movie 29]" in prompt
    assert prompt.index("Movie 10]") < prompt.index("Movie 29]")
    assert prompt.count("\n[") + prompt.count(": [") == MAX_HISTORY_LINES
    assert "11d ago: [Movie 29] (4)" in prompt
    assert "<answer>" in prompt and "</answer>" in prompt


def test_user_prompt_without_timestamps_has_no_ages_and_is_stable():
    history = [HistoryLine("Heat (1995)", None), HistoryLine("Alien (1979)", 4.5)]
    prompt = user_prompt(history, now=123)
    assert "[Heat (1995)]\n[Alien (1979)] (4.5)" in prompt and "ago" not in prompt
    assert prompt == user_prompt(history, now=999999)


def test_item_prompt_fields_and_description_cut():
    item = Item("1", "Toy Story", ("Animation", "Comedy"), 1995, 4.146, 2077, " ".join(["word"] * 150))
    prompt = item_prompt(item)
    assert "Title: Toy Story (1995)" in prompt and "Genres: Animation, Comedy" in prompt
    assert "Average rating: 4.1/5 from 2077 ratings" in prompt
    assert prompt.count("word") == 100 and "..." in prompt
    bare = item_prompt(Item("2", "Unknown thing"))
    assert "Genres" not in bare and "Average" not in bare and "Year" not in bare


def test_rating_prompts_name_the_tags_and_averages():
    item = Item("1", "Heat", ("Crime",), 1995, 3.9, 10)
    history = [HistoryLine("Alien (1979)", 5), HistoryLine("Big (1988)", 2)]
    full = rating_prompt(history, item)
    for tag in ("<analyze user>", "</analyze item>", "<match>", "<rate>"):
        assert tag in full
    assert "average rating: 3.50" in full and "average rating: 3.90" in full
    direct = direct_rating_prompt(history, item)
    assert "<rate>" in direct and "<match>" not in direct
