"""Prompt templates (versioned): the user ranking prompt, the item prompt, and the rating prompts.

Contents follow docs/design.md section 2: the user prompt asks for an in-depth analysis of the history ending in
`<answer>` (R2ec, "Towards Large Recommender Models with Reasoning"); the item prompt asks for the item's key
attributes; the rating prompt asks for the four RecZero tags in order (`<analyze user>`, `<analyze item>`,
`<match>`, `<rate>`), and the direct variant only for `<rate>`.

Versions: `TEMPLATE_VERSION` covers the user and item prompts, which define the vectors: it is part of the
model fingerprint, hence of every index manifest and reasoning cache key; bump it whenever their wording
changes. `RATING_TEMPLATE_VERSION` covers the rating prompts (rating reports and adapters record it; rating
cache keys hold the whole prompt text), so rewording them does not invalidate item indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from indexer.core.catalog import Catalog, Item

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATE_VERSION = "v4"
RATING_TEMPLATE_VERSION = "r4"
ANSWER_MARKER = "<answer>"
MAX_HISTORY_LINES = 20
MAX_DESCRIPTION_WORDS = 100
RATING_TAGS = ("analyze user", "analyze item", "match", "rate")

@dataclass(frozen=True)
class HistoryLine:
    """One past interaction as the prompt shows it."""

    title: str
    rating: float | None = None
    timestamp: int | None = None
    genres: tuple[str, ...] = ()
    """The item's genres when it is a catalog item (a title sent by a client has none)."""

    @classmethod
    def of_item(cls, item: Item, rating: float | None = None, timestamp: int | None = None) -> HistoryLine:
        """The line of a catalog item: its display title and genres."""
        return cls(display_title(item), rating, timestamp, tuple(item.genres))


@dataclass(frozen=True)
class UserHistory:
    """A user's history, oldest first, as every ranker reads it."""

    lines: tuple[HistoryLine, ...]
    """Each entry as prompts show it: catalog display title (or the title a client sent), rating, time."""
    item_ids: tuple[str | None, ...]
    """Catalog id of each entry; None for an entry given by title only."""

    @property
    def known_ids(self) -> frozenset[str]:
        return frozenset(i for i in self.item_ids if i is not None)

    @classmethod
    def of_items(cls, entries: Sequence[tuple[str, float | None, int | None]], catalog: Catalog) -> UserHistory:
        """A history of catalog items given as (item id, rating, unix time) triples."""
        lines = tuple(HistoryLine.of_item(catalog[i], rating, ts) for i, rating, ts in entries)
        return cls(lines, tuple(i for i, _, _ in entries))


def month_of(timestamp: int) -> str:
    """The calendar month (UTC) of a unix time, "2000-03": absolute, so a line never changes with the clock."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m")


def _rating_text(rating: float) -> str:
    return f"{rating:g}"


def display_title(item: Item) -> str:
    """Title with the year in parentheses, unless the title already ends with it."""
    if item.year is None or item.title.endswith(f"({item.year})"):
        return item.title
    return f"{item.title} ({item.year})"


def history_line(entry: HistoryLine, for_rating: bool = False) -> str:
    """One history line of the user prompt: month, rating, title, genres ("2000-03 (5) [Toy Story (1995)] Animation,
    Comedy"; the rating before the title, so a reader who looks for the top-rated lines finds the title right after
    the score). `for_rating=True` gives the rating prompts' line: no genres, the rating after the title
    ("2000-03 [Toy Story (1995)] (5)")."""
    rating = f"({_rating_text(entry.rating)})" if entry.rating is not None else ""
    if for_rating:
        parts = [f"[{entry.title}]", rating]
    else:
        parts = [rating, f"[{entry.title}]", ", ".join(entry.genres)]
    if entry.timestamp is not None:
        parts.insert(0, month_of(entry.timestamp))
    return " ".join(part for part in parts if part)


def _history_lines(history: Sequence[HistoryLine], for_rating: bool = False) -> list[str]:
    return [history_line(entry, for_rating) for entry in history[-MAX_HISTORY_LINES:]]


USER_INSTRUCTION = (
    "Below is a user's viewing history, oldest first: month, their rating out of 5, title, genres. Analyse it: which "
    "genres, eras, moods and themes does the user prefer, and how have their tastes moved recently? Then name the "
    f"single item they are most likely to enjoy next, inside {ANSWER_MARKER} and </answer>.\n\n"
)
"""Everything of the user prompt that comes before the history: the same for every user, so the history lines
and the closing of the turn are all that differ (one forward pass over a window serves every cut of it)."""


def user_prompt(history: Sequence[HistoryLine]) -> str:
    """The ranking prompt: the instruction, then up to the 20 most recent history lines (oldest first), nothing
    after the last line."""
    return USER_INSTRUCTION + "\n".join(_history_lines(history))


def item_prompt(item: Item) -> str:
    """The item prompt: the item's content (title, genres, year, description), asking for a summary of its key
    attributes. No rating statistics: an item nobody has rated yet reads like any other, and no held-out rating
    can leak into an item's vector (its popularity is the item table's business, `model.networks.item_table`)."""
    lines = [f"Title: {display_title(item)}"]
    if item.genres:
        lines.append(f"Genres: {', '.join(item.genres)}")
    if item.year is not None:
        lines.append(f"Year: {item.year}")
    if item.description:
        words = item.description.split()
        cut = " ".join(words[:MAX_DESCRIPTION_WORDS]) + (" ..." if len(words) > MAX_DESCRIPTION_WORDS else "")
        lines.append(f"Description: {cut}")
    return (
        "\n".join(lines)
        + f"\n\nSummarise the key attributes of this item (genre, era, tone, audience) inside {ANSWER_MARKER} and "
        "</answer>."
    )


PREFERENCE_TEMPLATE_VERSION = "p1"
"""Version of `preference_prompt` (reports of simulated users record it; it defines no vector)."""
PREFERENCE_HISTORY_LINES = 50
PREFERENCE_CHOICES = ("A", "B")
PREFERENCE_INSTRUCTION = (
    "Below is your viewing history, oldest first: month, your rating out of 5, title, genres. You are this viewer.\n\n"
)


def preference_prompt(history: Sequence[HistoryLine], first: Item, second: Item) -> str:
    """The language model as the user (seed 001, 2511.21989): the user's history (up to the 50 most recent lines,
    more than the ranking prompt's 20, because the paper finds the whole history makes the simulated user more
    faithful), then two items as choices A and B. Everything before the choices is the same for every pair asked
    of one user, so the fast engine computes it once per user (its held prefix)."""
    lines = "\n".join(history_line(entry) for entry in history[-PREFERENCE_HISTORY_LINES:])
    return (f"{PREFERENCE_INSTRUCTION}{lines}\n\nWhich of these two would you rather watch next?\n"
            f"A: {_choice_line(first)}\nB: {_choice_line(second)}\nAnswer with A or B.")


def _choice_line(item: Item) -> str:
    genres = f" {', '.join(item.genres)}" if item.genres else ""
    return f"[{display_title(item)}]{genres}"


def rating_history_block(history: Sequence[HistoryLine]) -> str:
    """The start of both rating prompts: the history (up to 20 lines, without genres) and the user's average. It
    holds nothing of the target item, so the states of one history serve every target item of it
    (`model.rating.states`)."""
    rated = [h.rating for h in history[-MAX_HISTORY_LINES:] if h.rating is not None]
    user_avg = f"{sum(rated) / len(rated):.2f}" if rated else "unknown"
    lines = "\n".join(_history_lines(history, for_rating=True))
    return (f"A user's rating history, oldest first (ratings out of 5):\n{lines}\n"
            f"The user's average rating: {user_avg}\n\n")


def rating_item_block(item: Item) -> str:
    """The end of both rating prompts: the target item and its average rating."""
    item_avg = f"{item.avg_rating:.2f}" if item.avg_rating is not None else "unknown"
    genres = f" ({', '.join(item.genres)})" if item.genres else ""
    return f"Target item: {display_title(item)}{genres}\nThe item's average rating: {item_avg}"


RATING_INSTRUCTION = (
    "Predict the user's rating of the target item below, step by step. First describe the user's tastes inside "
    "<analyze user></analyze user>, then the target item's characteristics inside <analyze item></analyze item>, "
    "then how well the two match inside <match></match>, and finally give a whole number from 1 to 5 inside "
    "<rate></rate>.\n\n"
)
DIRECT_RATING_INSTRUCTION = (
    "Predict the user's rating of the target item below. Answer only with a whole number from 1 to 5 inside "
    "<rate></rate>.\n\n"
)


def rating_prompt(history: Sequence[HistoryLine], item: Item) -> str:
    """RecZero-style rating prompt: four tags in order, the last holding an integer rating 1..5. The history
    comes first, the target item last (after the instruction)."""
    return rating_history_block(history) + RATING_INSTRUCTION + rating_item_block(item)


def direct_rating_prompt(history: Sequence[HistoryLine], item: Item) -> str:
    """The direct variant: no reasoning, only `<rate>N</rate>`; the same order (history, instruction, item)."""
    return rating_history_block(history) + DIRECT_RATING_INSTRUCTION + rating_item_block(item)


def render_chat(tokenizer: PreTrainedTokenizerBase, user_text: str, assistant_text: str = "") -> str:
    """[user: user_text][assistant: assistant_text] with the model's chat template and no end-of-turn after the
    assistant text (docs/design.md section 2): the text every engine tokenizes for generation and vectors."""
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
    )
    return head + assistant_text
