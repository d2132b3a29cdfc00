"""`reasonrec experiment title-history` on a tiny cold-items table: the three forms of a history, the `titles`
form placed by g (the title's row is g of the title's features), and the report of two tables on the same
users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.core.catalog import Item
from model.engines.transformers_engine import TransformersEngine
from model.networks.item_features import ContentFeaturizer
from trainer.cli import build_parser
from trainer.config_args import config_from_args
from trainer.experiments.title_history import FormRanker, KnownTitles, TitleHistoryConfig, history_form, title_history
from trainer.protocol.harness import user_history
from trainer.train.table.features import table_store
from trainer.train.table.served import ServedTable


def test_the_three_forms_of_a_history(served: ServedTable) -> None:
    example = next(e for e in served.split.test if len(e.history) >= 5)
    history = user_history(example, served.dataset.catalog)
    assert history_form(history, "ids", 2) == history
    titled = history_form(history, "titles", 2)
    assert titled.lines == history.lines and titled.item_ids == history.item_ids[:-2] + (None, None)
    dropped = history_form(history, "dropped", 2)
    assert dropped.lines == history.lines[:-2] and dropped.item_ids == history.item_ids[:-2]
    with pytest.raises(ValueError, match="unknown history form"):
        history_form(history, "other", 2)


def test_titles_enter_the_encoder_through_g_of_their_text(served: ServedTable,
                                                          tiny_engine: TransformersEngine) -> None:
    catalog, artifact = served.dataset.catalog, served.artifact
    examples = [e for e in served.split.test if len(e.history) >= 5][:4]
    titles = [line.title for e in examples for line in user_history(e, catalog).lines[-2:]]
    featurizer = KnownTitles(ContentFeaturizer(artifact.spec, tiny_engine, None, artifact.center), titles)
    store = table_store(artifact, served.features, catalog)
    scores = {form: FormRanker(artifact, store, featurizer, form, 2).scores(examples)
              for form in ("ids", "titles", "dropped")}
    model, code = artifact.model.eval(), artifact.code_of
    with torch.no_grad():
        rows = model.table(served.features)
        direct = ContentFeaturizer(artifact.spec, tiny_engine, None, artifact.center)
        for row, example in enumerate(examples):
            ids = [code[x.item_id] for x in example.history][-model.config.max_len:]
            shown = [line.title for line in user_history(example, catalog).lines[-2:]]
            title_rows = model.content_rows(torch.from_numpy(direct.features([Item(f"title:{t}", t) for t in shown])))
            for form, inputs in (("ids", rows[ids]), ("titles", torch.cat([rows[ids[:-2]], title_rows])),
                                 ("dropped", rows[ids[:-2]])):
                user = model.user_vectors(inputs[None, :, :-1], torch.tensor([len(inputs)]))[0]
                expected = rows[1:] @ torch.cat([user, torch.ones(1)])
                order = [code[i] - 1 for i in catalog.ids()]
                np.testing.assert_allclose(scores[form][row], expected[order].numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(scores["titles"], scores["ids"])  # the text row is not the id's row


def test_the_command_compares_tables_on_the_same_users(served: ServedTable, data: Path,
                                                       tiny_engine: TransformersEngine, module_artifacts: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    table = str(served.table_folder)
    args = build_parser().parse_args(["experiment", "title-history", "--dataset", "ml-1m-zip", "--data-path",
                                      str(data), "--protocol", "cold-items", "--model", "tiny", "--tables",
                                      f"{table},{table}", "--out-dir", "results", "--bootstrap", "50"])
    monkeypatch.chdir(module_artifacts.parent)
    config = config_from_args(TitleHistoryConfig, args)
    paths = title_history(config, "reasonrec experiment title-history --dataset ml-1m-zip", tiny_engine)
    assert [p.name for p in paths] == ["ml-1m-zip-cold-items-title-history.md",
                                       "ml-1m-zip-cold-items-title-history.json"]
    report = json.loads(paths[1].read_text())
    first, second = report["tables"]
    assert [r["form"] for r in first["rows"]] == ["ids", "titles", "dropped"] and report["users"] >= 1
    assert first["rows"] == second["rows"] and "titles_minus_reference_titles" not in first
    assert second["titles_minus_reference_titles"] == {"mean": 0.0, "ci95": [0.0, 0.0]}  # same users, same table
    text = paths[0].read_text()
    assert "| titles |" in text and str(module_artifacts.parent) not in text and str(data) not in text


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="--titles"):
        TitleHistoryConfig(dataset="ml-100k", titles=5, min_history=5)
