"""Prompt templates: absolute months, the shared instruction prefix, the history cap, item fields and the rating
format."""

from __future__ import annotations

from indexer.core.catalog import Item
from model.prompts import (
    MAX_HISTORY_LINES,
    USER_INSTRUCTION,
    HistoryLine,
    direct_rating_prompt,
    item_prompt,
    rating_prompt,
    user_prompt,
)

DAY = 86400


def test_user_prompt_keeps_the_twenty_most_recent_in_order_with_months():
    history = [HistoryLine(f"Movie {i}", 4.0, 951_868_800 + i * 40 * DAY) for i in range(30)]  # from 2000-03-01
    prompt = user_prompt(history)
    assert "Movie 9]" not in prompt and "Movie 10]" in prompt and "Movie 29]" in prompt
    assert prompt.index("Movie 10]") < prompt.index("Movie 29]")
    assert prompt.count("(4) [") == MAX_HISTORY_LINES
    assert "2003-05 (4) [Movie 29]" in prompt  # 2000-03-01 + 1160 days = 2003-05-05
    assert "<answer>" in prompt and "</answer>" in prompt


def test_user_prompt_puts_the_instruction_first_and_ends_with_the_last_line():
    history = [HistoryLine("Heat (1995)", None), HistoryLine("Alien (1979)", 4.5)]
    prompt = user_prompt(history)
    assert prompt == USER_INSTRUCTION + "[Heat (1995)]\n(4.5) [Alien (1979)]"
    # a longer history only appends lines: the prompt of a prefix is a prefix of the prompt
    assert user_prompt([*history, HistoryLine("Big (1988)", 3)]).startswith(prompt + "\n")


def test_user_prompt_shows_a_catalog_item_with_its_genres_and_the_rating_prompt_does_not():
    item = Item("1", "Toy Story", ("Animation", "Comedy"), 1995)
    line = HistoryLine.of_item(item, 5.0, 951_868_800)
    assert user_prompt([line]).endswith("2000-03 (5) [Toy Story (1995)] Animation, Comedy")
    other = Item("2", "Heat", ("Action",), 1995, 3.9)
    rating = rating_prompt([line], other)
    assert "[Toy Story (1995)] (5)" in rating and "Animation" not in rating
    assert user_prompt([HistoryLine("A title a client sent", 4.0)]).endswith("(4) [A title a client sent]")


def test_item_prompt_fields_and_description_cut():
    item = Item("1", "Toy Story", ("Animation", "Comedy"), 1995, 4.146, 2077, " ".join(["word"] * 150))
    prompt = item_prompt(item)
    assert "Title: Toy Story (1995)" in prompt and "Genres: Animation, Comedy" in prompt
    assert "Average" not in prompt and "2077" not in prompt  # content only, never rating statistics
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
