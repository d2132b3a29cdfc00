"""The conclusion term's job (`reasonrec train-conclusion`): weights chosen on validation users and measured on
test users against s(history) alone. With reasonings whose conclusion names the next item's genre (an oracle
engine: the test controls the text, the job does the rest) the term learns a positive genre weight and lifts
NDCG@10; with conclusions that carry nothing it keeps (0, 0), s alone. The reasonings come from the engine once
(cached), the weights land beside the adapter, the report names the figures."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import write_cycle_ml1m

from model.claims import render
from model.engines.base import Reasoning
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.rankers.conclusion import ConclusionTerm
from model.rankers.llm import LlmRanker
from trainer.data import protocols
from trainer.protocol.harness import user_history
from trainer.train.conclusion import ConclusionConfig, train_conclusion
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec


class ScriptedEngine(TransformersEngine):
    """The tiny engine, reasoning with the text `write(prompt)` instead of its own (counted)."""

    def __init__(self, write: Callable[[str], str]) -> None:
        super().__init__(load_model("tiny"))
        self.write, self.calls = write, 0

    def reason(self, user_texts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        self.calls += len(user_texts)
        return [Reasoning(self.write(t), np.zeros(self.hidden_size, np.float32), 9, True) for t in user_texts]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("conclusion")
    data = write_cycle_ml1m(root / "data", n_users=60)
    settings = dict(dataset="ml-1m-zip", data_path=data, max_len=8, hidden=8, blocks=1, max_epochs=1, patience=1,
                    out_dir=root / "sasrec")
    train_sasrec(SasrecTrainConfig(**settings))
    return data, root / "sasrec"


def _config(trained: tuple[Path, Path], tmp_path: Path) -> ConclusionConfig:
    data, sasrec = trained
    (tmp_path / "adapter").mkdir(exist_ok=True)
    return ConclusionConfig(dataset="ml-1m-zip", data_path=data, model="tiny", adapter=tmp_path / "adapter",
                            sasrec_checkpoint=sasrec, valid_users=40, test_users=40, bootstrap=50,
                            out_dir=tmp_path / "docs", cache_dir=tmp_path / "cache")


def _oracle(config: ConclusionConfig) -> Callable[[str], str]:
    """Each user's reasoning concludes the genre of the item that came next (for validation and test users)."""
    ds, split = config.load()
    rng = random.Random(0)
    truth = {}
    for example in [*split.valid, *protocols.test_parts(split)["all"]]:
        genre = ds.catalog[example.target.item_id].genres[0]
        prompt = LlmRanker.prompt(user_history(example, ds.catalog))
        truth[prompt] = f"Top genre: Drama. {render('prediction', {'g0': genre}, rng)}"
    return lambda prompt: truth[prompt]


def test_an_informative_conclusion_earns_a_weight_and_lifts_the_ranking(trained, tmp_path):
    config = _config(trained, tmp_path)
    engine = ScriptedEngine(_oracle(config))
    term, paths = train_conclusion(config, engine, "reasonrec train-conclusion (test)")
    assert term.genre > 0 and ConclusionTerm.load(config.adapter) == term
    report = json.loads(paths[1].read_text())
    ndcg = report["test"]["NDCG@10"]
    assert ndcg["s + term"] > ndcg["s alone"] and ndcg["difference ci95"][0] > 0
    assert report["conclusion_accuracy"]["genre"] == 1.0 and report["reasoning"]["with_conclusion"] == 1.0
    assert report["top10_matching"]["with term"]["genre"] > report["top10_matching"]["without term"]["genre"]
    assert "| NDCG@10 |" in paths[0].read_text() and engine.calls == 80
    again = ScriptedEngine(_oracle(config))
    train_conclusion(config, again, "again")
    assert again.calls == 0  # every reasoning came from the cache


def test_conclusions_that_say_nothing_keep_s_alone(trained, tmp_path):
    config = _config(trained, tmp_path)
    term, paths = train_conclusion(config, ScriptedEngine(lambda prompt: "Mostly Drama"), "test")
    assert term == ConclusionTerm(0.0, 0.0)
    report = json.loads(paths[1].read_text())
    assert report["test"]["NDCG@10"]["difference"] == 0 and report["reasoning"]["with_conclusion"] == 0
