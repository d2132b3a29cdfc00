"""`reasonrec experiment cold-diagnosis` on a tiny cold-items table: the ranks among cold items are those of the
served rows restricted to the cold items (brute force), a planted best cold item ranks first, and the report is
written without absolute paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import HashEncoder

from model.engines.transformers_engine import TransformersEngine
from model.networks.sasrec import right_padded
from trainer.cli import build_parser
from trainer.config_args import config_from_args
from trainer.experiments.cold_diagnosis import ColdDiagnosisConfig, RandomRanker, cold_diagnosis, diagnosis_ranks
from trainer.train.table.served import ServedTable


def served_cold_ranks(served: ServedTable, examples: list) -> tuple[list[int], list[int]]:
    """Brute force from the served table: u = s(history) over the served rows, the target against the cold items
    (and against all items), history excluded."""
    model, code = served.artifact.model.eval(), served.artifact.code_of
    cold = [code[i] for i in served.shown_ids()]
    among_cold, among_all = [], []
    with torch.no_grad():
        rows = model.table(served.features)
        for e in examples:
            history = [code[x.item_id] for x in e.history][-model.config.max_len:]
            user = model.user_vectors(rows[right_padded([history]), :-1], torch.tensor([len(history)]))[0]
            score = rows @ torch.cat([user, torch.ones(1)])
            target = code[e.target.item_id]
            others = [c for c in range(1, len(code) + 1) if c != target and c not in history]
            among_cold.append(1 + int((score[[c for c in others if c in cold]] > score[target]).sum()))
            among_all.append(1 + int((score[others] > score[target]).sum()))
    return among_cold, among_all


def test_the_ranks_among_cold_items_are_the_served_rows_restricted_to_them(served: ServedTable) -> None:
    ranks = diagnosis_ranks(served, HashEncoder(), random_seed=0)
    assert ranks.examples and set(ranks.cold_ids) >= served.split.cold_items & set(served.dataset.catalog.ids())
    among_cold, among_all = served_cold_ranks(served, ranks.examples)
    np.testing.assert_array_equal(ranks.rows[("g", "cold items")], among_cold)
    np.testing.assert_array_equal(served.ranking(ranks.examples).ranks_among_shown(), among_cold)
    np.testing.assert_array_equal(ranks.rows[("g", "all items")], among_all)
    for ranker in ("g", "content"):  # fewer candidates, never a worse rank
        assert (ranks.rows[(ranker, "cold items")] <= ranks.rows[(ranker, "all items")]).all()
    for values in ranks.rows.values():
        assert ((values >= 1) & (values <= len(served.dataset.catalog))).all()
    assert (ranks.rows[("random", "cold items")] <= len(ranks.cold_ids)).all()


def test_a_planted_target_ranks_first_or_last_among_cold_items(served: ServedTable) -> None:
    """The first cold target's score moved far up ranks it first among the cold items; far down, last among the
    cold items its user has not seen (and among all items it stays behind every warm row then)."""
    cold = set(served.shown_ids())
    example = next(e for e in served.split.test if e.target.item_id in cold)
    ranking = served.ranking([example])
    unseen = len(cold - {x.item_id for x in example.history} - {example.target.item_id})
    assert 1 <= ranking.ranks_among_shown()[0] <= unseen + 1
    ranking.target_bias += 1e6
    assert ranking.ranks_among_shown()[0] == 1
    ranking.target_bias -= 2e6
    assert ranking.ranks_among_shown()[0] == unseen + 1
    assert ranking.ranks(1.0, 0.0)[0] == len(served.dataset.catalog) - len(
        {x.item_id for x in example.history})  # every other unseen item is above it


def test_the_random_ranker_is_seeded() -> None:
    examples = [object()] * 5
    first, again = RandomRanker(30, 1).scores(examples), RandomRanker(30, 1).scores(examples)  # type: ignore[arg-type]
    np.testing.assert_array_equal(first, again)
    assert first.shape == (5, 30)


def test_the_command_writes_the_report_without_absolute_paths(served: ServedTable, data: Path,
                                                               tiny_engine: TransformersEngine, module_artifacts: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["experiment", "cold-diagnosis", "--dataset", "ml-1m-zip", "--data-path",
                                      str(data), "--model", "tiny", "--out-dir", "results", "--bootstrap", "50"])
    monkeypatch.chdir(module_artifacts.parent)  # the artifacts are below it, as ./artifacts is in a checkout

    config = config_from_args(ColdDiagnosisConfig, args)
    paths = cold_diagnosis(config, "reasonrec experiment cold-diagnosis --dataset ml-1m-zip", tiny_engine,
                           HashEncoder())
    assert [p.name for p in paths] == ["ml-1m-zip-cold-diagnosis.md", "ml-1m-zip-cold-diagnosis.json"]
    report = json.loads(paths[1].read_text())
    assert report["cold_items"] == len(served.shown_ids()) and report["cold_target_users"] >= 1
    assert [(r["ranker"], r["among"]) for r in report["rows"]] == [
        ("g", "cold items"), ("content", "cold items"), ("random", "cold items"), ("g", "all items"),
        ("content", "all items")]
    for row in report["rows"]:
        for metric in ("HR@10", "NDCG@10", "MRR"):
            low, high = row["metrics"][metric]["ci95"]
            assert low <= row["metrics"][metric]["mean"] <= high
    text = paths[0].read_text()
    assert "| g | cold items |" in text and str(module_artifacts.parent) not in text and str(data) not in text

