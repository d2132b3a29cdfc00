"""SASRec+ (model.networks.sasrec, trainer.train.sasrec) on a tiny synthetic dataset with a learnable pattern: every
user walks a cycle of items (item i is followed by item i + 1), so the next item is predictable from the last
one while popularity is nearly uniform. Seconds, CPU only."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.train.sasrec as sasrec_train
from indexer.core.catalog import Item
from model.networks.sasrec import SasrecConfig, SasrecNet, SasrecScorer, last_logits, right_padded
from model.rankers.popular import PopularRanker
from model.rankers.sasrec import SasrecRanker
from trainer.data.datasets import Dataset, Interaction, make_dataset
from trainer.data.protocols import make_split
from trainer.data.splits import training_counts
from trainer.protocol.harness import CoreRanker, rank_examples
from trainer.protocol.metrics import mean_metrics
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec

N_ITEMS = 40


def cycle_dataset(n_users: int = 160, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    items = [Item(f"m{i}", f"Movie {i}", ("Drama",), 1990) for i in range(N_ITEMS)]
    interactions = []
    for user in range(n_users):
        start, length = rng.randrange(N_ITEMS), rng.randrange(6, 16)
        interactions += [Interaction(str(user), f"m{(start + t) % N_ITEMS}", float(1 + t % 5), 1000 + t)
                         for t in range(length)]
    return make_dataset("ml-1m", items, interactions)


def tiny_config(out: Path, **overrides: object) -> SasrecTrainConfig:
    settings = dict(max_len=16, hidden=16, blocks=1, dropout=0.0, lr=5e-3, batch_size=32, max_epochs=25,
                    patience=4, out_dir=out)
    return SasrecTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SasrecScorer, Dataset, Path]:
    ds, out = cycle_dataset(), tmp_path_factory.mktemp("sasrec") / "run"
    return train_sasrec(tiny_config(out), ds), ds, out


def test_network_is_causal_and_ignores_right_padding() -> None:
    torch.manual_seed(0)
    net = SasrecNet(SasrecConfig(n_items=20, max_len=8, hidden=16, blocks=2, heads=2)).eval()
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    changed = ids.clone()
    changed[0, 4] = 2
    with torch.no_grad():
        assert torch.allclose(net(ids)[0, :4], net(changed)[0, :4], atol=1e-6)
        padded = right_padded([[3, 5, 7], [1, 2, 3, 4, 5, 6]])
        assert torch.allclose(net(padded)[0, :3], net(ids[:, :3])[0], atol=1e-6)
        assert last_logits(net, [[3, 5, 7]]).shape == (1, 20)


def test_config_checks_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--heads"):
        SasrecConfig(n_items=5, hidden=10, heads=3)
    with pytest.raises(ValueError, match="--dropout"):
        SasrecConfig(n_items=5, dropout=1.0)
    with pytest.raises(ValueError, match="--protocol"):
        SasrecTrainConfig(protocol="random")
    with pytest.raises(ValueError, match="--lr"):
        SasrecTrainConfig(lr=0)


def test_training_learns_the_pattern_and_beats_popularity(trained: tuple[SasrecScorer, Dataset, Path]) -> None:
    scorer, ds, _ = trained
    split = make_split(ds, "leave-one-out")
    candidates = ds.catalog.ids()
    sasrec_ranker = CoreRanker(SasrecRanker(scorer), ds.catalog, candidates)
    popular_ranker = CoreRanker(PopularRanker(training_counts(candidates, split)), ds.catalog, candidates)
    sasrec = mean_metrics(rank_examples(sasrec_ranker, split.test, candidates).per_query())
    popular = mean_metrics(rank_examples(popular_ranker, split.test, candidates).per_query())
    assert sasrec["HR@10"] > 0.9 > popular["HR@10"] + 0.4
    assert sasrec["NDCG@10"] > popular["NDCG@10"] + 0.4


def test_checkpoint_metadata_and_scorer_api(trained: tuple[SasrecScorer, Dataset, Path]) -> None:
    scorer, _, out = trained
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "done" and not (out / "resume.pt").exists()
    assert {"config", "data", "split", "metrics", "seed", "item_ids", "network", "history"} <= set(meta)
    assert meta["config"]["protocol"] == "leave-one-out" and meta["metrics"]["test"]["all"]["HR@10"] > 0.9
    loaded = SasrecScorer.load(out)
    history = ["m3", "m4", "m5", "hot-added-item"]
    result = loaded.score(history)
    assert result.ignored_history == ("hot-added-item",)
    assert np.allclose(result.scores, scorer.score(history).scores, atol=1e-6)
    top = loaded.top_k(history, k=3, exclude=history)
    assert top[0][0] == "m6" and all(item not in history for item, _ in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert loaded.cannot_score(["m1", "brand-new", "m2"]) == ["brand-new"]
    assert np.all(loaded.score_batch([["unknown"]]) == 0)  # no known history: no preference


def test_rerun_of_a_finished_run_is_a_no_op(trained: tuple[SasrecScorer, Dataset, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, ds, out = trained
    monkeypatch.setattr(sasrec_train, "_epoch", lambda *a, **k: pytest.fail("trained again"))
    assert train_sasrec(tiny_config(out), ds).meta["status"] == "done"
    with pytest.raises(ValueError, match="other settings"):
        train_sasrec(tiny_config(out, hidden=8), ds)


def interrupted_in_third_epoch(config: SasrecTrainConfig, ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `config` until the third epoch is killed, then put the real epoch function back."""
    real_epoch, calls = sasrec_train._epoch, {"n": 0}

    def dies_in_third_epoch(*args: object, **kwargs: object) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(sasrec_train, "_epoch", dies_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_sasrec(config, ds)
    monkeypatch.setattr(sasrec_train, "_epoch", real_epoch)


def test_interrupted_training_resumes_to_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = cycle_dataset(n_users=60, seed=1)
    config = tiny_config(tmp_path / "straight", max_epochs=4, patience=10)
    straight = train_sasrec(config, ds)
    resumed_config = replace(config, out_dir=tmp_path / "resumed")
    interrupted_in_third_epoch(resumed_config, ds, monkeypatch)
    assert (tmp_path / "resumed" / "resume.pt").is_file()
    resumed = train_sasrec(resumed_config, ds)
    assert resumed.meta["epochs"] == straight.meta["epochs"] == 4
    for name, tensor in straight.net.state_dict().items():
        assert torch.equal(tensor, resumed.net.state_dict()[name]), name


def test_cold_items_are_unscorable(tmp_path: Path) -> None:
    ds = cycle_dataset()
    scorer = train_sasrec(tiny_config(tmp_path / "cold", protocol="cold-items", max_epochs=2), ds)
    split = make_split(ds, "cold-items")
    assert set(scorer.cannot_score(ds.catalog.ids())) == split.cold_items
    candidates = ds.catalog.ids()
    cold = rank_examples(CoreRanker(SasrecRanker(scorer), ds.catalog, candidates), split.test_cold, candidates)
    assert len(cold.ranks) > 0 and np.all(np.isinf(cold.ranks))


def test_a_smaller_max_epochs_ends_an_unfinished_run_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = cycle_dataset(n_users=60, seed=2)
    config = tiny_config(tmp_path / "run", max_epochs=6, patience=10)
    interrupted_in_third_epoch(config, ds, monkeypatch)
    monkeypatch.setattr(sasrec_train, "_epoch", lambda *a, **k: pytest.fail("trained again"))
    scorer = train_sasrec(replace(config, max_epochs=2), ds)
    assert scorer.meta["status"] == "done" and scorer.meta["epochs"] == 2
    assert scorer.meta["stopped"] == "max epochs (2)" and "test" in scorer.meta["metrics"]
