"""The hot-add twin check of the item table (docs/design.md section 2): is an item added through g by its text alone
recommended where its original is?

For `n_items` seeded warm items (held by at least `MIN_HOLDERS` test users), a twin (same text, new id) is added to
a copy of the table's index the way the service hot-adds an item: its content row [g(c), g_b(c)], no residual. For
up to `users_per_item` test users whose history holds the original, s(history) ranks every item with their history
excluded except the original, and every other twin excluded (each twin is checked as if it were the one item
added); the check counts how often the twin and how often the original land
in the top `k`. A twin that is in the top k about as often as its original is placed by its text where its users
are. With the table's cold-slot gate (`model.rankers.cold_slots`) the counts are also taken on the gated top k,
as the service lists them (twins are content-served, so the gate can only add them and drop warm originals).
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from indexer.core.catalog import Catalog
from indexer.store import ItemStore
from model.networks.item_features import combine
from model.networks.minilm import MiniLMEncoder, item_text
from model.networks.table_artifact import TableArtifact
from model.rankers.base import top_k_of
from model.rankers.cold_slots import ColdSlots
from model.rankers.table import TableRanker
from trainer.data.splits import Example
from trainer.protocol.harness import user_history

TWIN_PREFIX = "twin:"
MIN_HOLDERS = 5
"""An item is checked only when at least this many test users hold it."""


def twin_check(table: TableArtifact, store: ItemStore, states: dict[str, np.ndarray], catalog: Catalog,
               test: list[Example], n_items: int = 100, users_per_item: int = 20, k: int = 20,
               seed: int = 0) -> dict:
    """The counts and rates of the check; `states` holds the raw item states of the chosen items' originals."""
    holders: dict[str, list[Example]] = {}
    for example in sorted(test, key=lambda e: e.user_id):
        for x in example.history:
            holders.setdefault(x.item_id, []).append(example)
    code = table.code_of
    eligible = sorted(i for i, users in holders.items()
                      if len(users) >= MIN_HOLDERS and i in code and bool(table.model.warm[code[i]]))
    chosen = random.Random(seed).sample(eligible, min(n_items, len(eligible)))
    items = [catalog[i] for i in chosen]
    text = MiniLMEncoder().encode([item_text(i) for i in items]) if table.spec.minilm else None
    llm = np.stack([states[i] for i in chosen]) if table.spec.llm else None
    rows = table.content_rows(combine(table.spec, llm, text, table.center))
    twins = [replace(item, item_id=TWIN_PREFIX + item.item_id) for item in items]
    augmented = ItemStore.create(Catalog({**store.catalog.items, **{t.item_id: t for t in twins}}),
                                 np.vstack([store.vectors_of(store.catalog.ids()), rows]), store.manifest.fingerprint,
                                 table=store.manifest.table)
    ranker = TableRanker(table, augmented)
    slots, cold_mask = ColdSlots.from_meta(table.meta), table.content_served(ranker.item_ids)
    hits = {"twin": 0, "original": 0, "twin_gated": 0, "original_gated": 0}
    pairs = 0
    twin_ids = {twin.item_id for twin in twins}
    for item_id in chosen:
        users = random.Random(f"{seed}:{item_id}").sample(holders[item_id], min(users_per_item, len(holders[item_id])))
        scores = ranker.scores([user_history(e, augmented.catalog) for e in users])
        others = twin_ids - {TWIN_PREFIX + item_id}
        for example, row in zip(users, scores, strict=True):
            exclude = ({x.item_id for x in example.history} - {item_id}) | others
            for suffix, top in (("", top_k_of(row, ranker.item_ids, k, exclude)),
                                ("_gated", slots.top_k(row, ranker.item_ids, cold_mask, k, exclude))):
                listed = {i for i, _ in top}
                hits["twin" + suffix] += TWIN_PREFIX + item_id in listed
                hits["original" + suffix] += item_id in listed
            pairs += 1
    return {"items": len(chosen), "users_per_item": users_per_item, "pairs": pairs, "k": k,
            **{f"{name}_in_top_k": count / max(pairs, 1) for name, count in hits.items()}, "gate": slots.to_meta(),
            "note": (f"{len(chosen)} seeded warm items held by at least {MIN_HOLDERS} test users each (up to "
                     f"{users_per_item} of them checked); a twin (same "
                     "text, new id) added through g like a hot-added item; s(history) of those users ranks every "
                     "item, history excluded except the original, the other twins excluded; share of (user, item) "
                     f"pairs with the twin / the original in the top {k}; gated: the same with the table's cold-slot "
                     f"gate {slots.to_meta()}.")}
