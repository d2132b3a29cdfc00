"""The users a served judge answers as (seed 001, arXiv 2511.21989: the language model as the user): a seeded pool of
training users and their histories, written next to the judge's adapter by `reasonrec train-judge` (`pool.json`)
and read by the gateway's simulated-user job (`service.simulated_users`).

Each history keeps its most recent `PREFERENCE_HISTORY_LINES` interactions, what the preference prompt reads, as
(item id, rating, timestamp) in time order; the items are the catalog's, so the gateway renders them as history
lines and reads their rows for the user's vector s(history). `JudgePool.questions` is how the gateway picks whom to
ask about a new item (and `reasonrec experiment simulated-users` measures that rule, "per-item").
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.core.catalog import Catalog
from indexer.core.durable import replace_text
from model.prompts import PREFERENCE_HISTORY_LINES, UserHistory

POOL_FILE = "pool.json"


@dataclass(frozen=True)
class Answer:
    """A simulated user's answer: `user` prefers `first` to `second` with probability `p`, by the judge."""

    user: str
    first: str
    second: str
    p: float


@dataclass(frozen=True)
class PoolUser:
    user_id: str
    history: tuple[tuple[str, float | None, int | None], ...]
    """(item id, rating, timestamp), oldest first."""

    def read(self, catalog: Catalog) -> UserHistory:
        """The history as the gateway reads it (items the catalog no longer holds are left out)."""
        return UserHistory.of_items([entry for entry in self.history if entry[0] in catalog], catalog)


@dataclass(frozen=True)
class JudgePool:
    users: tuple[PoolUser, ...]
    source: dict
    """Where the pool comes from: dataset, split, seed and the command that wrote it."""

    def save(self, path: Path) -> None:
        data = {"source": self.source,
                "users": [{"user_id": u.user_id, "history": [list(x) for x in u.history]} for u in self.users]}
        replace_text(path, json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: Path) -> JudgePool:
        """The pool at `path`; a ValueError that names the file when it is not one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            users = tuple(PoolUser(str(u["user_id"]), tuple((str(i), r, t) for i, r, t in u["history"]))
                          for u in data["users"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a judge pool (`reasonrec train-judge` writes one): {exc}") from exc
        if not users:
            raise ValueError(f"{path} holds no user")
        return cls(users, dict(data.get("source") or {}))

    def questions(self, new: Sequence[str], others: Sequence[str], users_per_item: int
                  ) -> dict[str, list[tuple[str, str]]]:
        """User id -> the pairs to ask of that user: each item of `new` against a seeded item of `others` (itself
        excluded), asked of `users_per_item` seeded users of the pool; seeded by the item's id, so the same item is
        asked the same whenever it is asked."""
        asked: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for item_id in new:
            rng = random.Random(f"simulated-users:{item_id}")
            opponents = [i for i in others if i != item_id]
            for user in rng.sample(self.users, min(users_per_item, len(self.users))):
                asked[user.user_id].append((item_id, rng.choice(opponents)))
        return dict(asked)

    @classmethod
    def of(cls, histories: dict[str, Sequence[tuple[str, float | None, int | None]]], source: dict) -> JudgePool:
        return cls(tuple(PoolUser(user, tuple(history[-PREFERENCE_HISTORY_LINES:]))
                         for user, history in histories.items()), source)
