"""Contrastive LoRA: the loss against a hand computation, every mask, the logQ correction, the negative cache, and
the training job on the tiny model (learning, resume after an interruption, the adapter as an artifact that the
loader, the index and hence the cache keys pick up)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import trainer.contrastive as contrastive
from indexer.manifest import ManifestMismatchError
from indexer.store import ItemStore
from model.loading import load_model
from model.transformers_engine import TransformersEngine
from trainer.contrastive import ADAPTER_META, train_contrastive
from trainer.contrastive_config import ContrastiveConfig
from trainer.cl_samples import TrainingSamples
from trainer.contrastive_loss import (NegativeCache, contrastive_loss, full_softmax_loss, history_mask,
                                      log_drawn_in_window)
from trainer.data import load_dataset
from trainer.eval_job import EvalConfig, run_eval
from trainer.index_job import IndexJobConfig, build_index
from trainer.protocols import make_split
from trainer.rankers import PopularityRanker

from test_eval_job import write_cycle_ml1m


def unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def cache_of(rows: list[list[float]]) -> NegativeCache:
    cache = NegativeCache.empty(len(rows), torch.zeros(len(rows[0])))
    cache.update(torch.arange(len(rows)), torch.tensor(rows, dtype=torch.float32), step=0)
    return cache


def manual_ce(logits: list[float], positive: int) -> float:
    return -(logits[positive] - math.log(sum(math.exp(x) for x in logits)))


def test_loss_matches_a_hand_computation_with_masks() -> None:
    # 4 items, center zero: cosines are plain.
    table = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    cache = cache_of(table)
    users = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    targets = torch.tensor([[1.0, 0.2], [0.1, -1.0]])
    codes = torch.tensor([0, 3])
    owned = history_mask([[0, 1], [3]], 4)  # user 0 owns item 1 besides its target 0
    tau = 0.5
    loss = contrastive_loss(users, targets, codes, cache, owned, None, tau)

    u, t, v = unit(users.tolist()), unit(targets.tolist()), unit(table)
    expected = []
    for b, other in ((0, 1), (1, 0)):
        row = [float(u[b] @ t[b]) / tau, float(u[b] @ t[other]) / tau]  # positive, other in-batch target
        # cache columns: never the own target, never an owned item
        banned = {int(codes[b])} | {j for j in range(4) if owned[b, j]}
        row += [float(u[b] @ v[j]) / tau for j in range(4) if j not in banned]
        expected.append(manual_ce(row, 0))
    assert loss.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)


def test_duplicate_targets_in_a_batch_are_not_negatives_and_unfilled_rows_are_ignored() -> None:
    cache = NegativeCache.empty(3, torch.tensor([0.1, -0.2]))
    cache.update(torch.tensor([1]), torch.tensor([[0.0, 1.0]]), step=0)
    users = torch.tensor([[1.0, 0.0], [0.8, 0.1]])
    targets = torch.tensor([[1.0, 0.1], [1.0, -0.1]])
    codes = torch.tensor([0, 0])  # both users have item 0 as target
    loss = contrastive_loss(users, targets, codes, cache, history_mask([[], []], 3), None, 1.0)
    center = cache.center
    u, t = F.normalize(users - center, dim=-1), F.normalize(targets - center, dim=-1)
    v1 = F.normalize(torch.tensor([0.0, 1.0]) - center, dim=-1)
    expected = [manual_ce([float(u[b] @ t[b]), float(u[b] @ v1)], 0) for b in range(2)]
    assert loss.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)


def test_full_softmax_loss_matches_a_hand_computation_with_prior_and_masks() -> None:
    table = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]]
    cache = cache_of(table)
    cache.filled[4] = False  # an unfilled row is never a negative
    users = torch.tensor([[1.0, 1.0], [1.0, -1.0]], requires_grad=True)
    codes = torch.tensor([0, 3])
    owned = history_mask([[0, 1], [3]], 5)  # user 0 owns item 1 besides its target 0
    prior = torch.tensor([0.0, 0.5, 0.2, 0.1, 9.0])
    tau = 0.5
    loss = full_softmax_loss(users, codes, cache, owned, tau, prior)
    u, v = unit(users.tolist()), unit(table)
    expected = []
    for b, allowed in ((0, [0, 2, 3]), (1, [0, 1, 2, 3])):
        row = [(float(u[b] @ v[j]) + float(prior[j])) / tau for j in allowed]
        expected.append(manual_ce(row, allowed.index(int(codes[b]))))
    assert loss.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)
    plain = full_softmax_loss(users, codes, cache, owned, tau)
    assert plain.item() == pytest.approx(full_softmax_loss(users, codes, cache, owned, tau, torch.zeros(5)).item())
    loss.backward()
    assert users.grad is not None and users.grad.abs().sum() > 0 and not cache.units.requires_grad


def test_logq_lowers_popular_in_batch_logits() -> None:
    cache = cache_of([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    users, targets = torch.tensor([[1.0, 0.3], [0.2, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    codes, owned = torch.tensor([0, 1]), history_mask([[], []], 4)
    plain = contrastive_loss(users, targets, codes, cache, owned, None, 1.0)
    # item 1 is very popular: its in-batch logit is lowered for everyone; user 0 (target 0) gains, user 1 loses
    log_q = torch.tensor([0.0, 3.0, 0.0, 0.0])
    corrected = contrastive_loss(users, targets, codes, cache, owned, log_q, 1.0)
    assert corrected.item() != pytest.approx(plain.item())
    zero = contrastive_loss(users, targets, codes, cache, owned, torch.zeros(4), 1.0)
    assert zero.item() == pytest.approx(plain.item())


def test_gradients_reach_users_and_targets_not_the_cache() -> None:
    cache = cache_of([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    users = torch.randn(2, 2, requires_grad=True)
    targets = torch.randn(2, 2, requires_grad=True)
    contrastive_loss(users, targets, torch.tensor([0, 1]), cache, history_mask([[], []], 4), None, 0.1).backward()
    assert users.grad is not None and users.grad.abs().sum() > 0
    assert targets.grad is not None and targets.grad.abs().sum() > 0
    cache.update(torch.tensor([2]), targets[:1], step=1)
    assert not cache.units.requires_grad and cache.filled.all()


def test_refill_recenters_on_the_new_mean_and_the_bias_sees_rows_written_since() -> None:
    cache = NegativeCache.empty(3, torch.zeros(2))
    raw = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, -1.0]])
    cache.refill(torch.tensor([0, 1, 2]), raw, step=5)
    torch.testing.assert_close(cache.center, raw.mean(dim=0))
    torch.testing.assert_close(cache.units, F.normalize(raw - raw.mean(dim=0), dim=-1))
    users = torch.tensor([[5.0, 0.0]])
    assert cache.filled.all() and not cache.written.any() and cache.fresh_row_bias(users) is None
    # a newer model moved item 2 towards the users: the gap between written and older rows is the bias
    cache.update(torch.tensor([2]), torch.tensor([[6.0, 0.5]]), step=6)
    u = F.normalize(users - cache.center, dim=-1)[0]
    expected = float(u @ cache.units[2] - (u @ cache.units[0] + u @ cache.units[1]) / 2)
    assert cache.fresh_row_bias(users) == pytest.approx(expected) and expected > 0


def test_the_window_keeps_only_rows_written_by_the_last_steps() -> None:
    cache = NegativeCache.empty(4, torch.zeros(2))
    cache.refill(torch.arange(4), torch.randn(4, 2), step=10)
    assert cache.negatives(10, window=0).all() and not cache.negatives(10, window=3).any()
    cache.update(torch.tensor([0]), torch.randn(1, 2), step=11)  # written by the step that began after 10 steps
    cache.update(torch.tensor([1]), torch.randn(1, 2), step=13)
    assert cache.negatives(13, window=3).tolist() == [True, True, False, False]  # steps 11..13 are the last 3
    assert cache.negatives(14, window=3).tolist() == [False, True, False, False]  # item 0 aged out
    cache.refill(torch.arange(4), torch.randn(4, 2), step=14)  # re-encoded: nothing is newer than the rest
    assert not cache.negatives(14, window=3).any() and cache.negatives(14, window=0).all()


def test_window_rows_get_the_log_probability_of_being_drawn() -> None:
    batch, steps = 4, 3
    log_q = torch.log(torch.tensor([2.0, 0.4, 0.004]))  # expected count per batch of 4 draws
    q = torch.tensor([0.5, 0.1, 0.001])
    expected = torch.log(1 - (1 - q) ** (batch * steps))
    torch.testing.assert_close(log_drawn_in_window(log_q, batch, steps), expected)
    # in the loss: a window row drawn surely (log 0) is untouched, a rarely drawn one is lifted by -log p
    cache = cache_of([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    users, targets = torch.tensor([[1.0, 0.2]]), torch.tensor([[1.0, 0.0]])
    args = (users, targets, torch.tensor([0]), cache, history_mask([[]], 3), None, 1.0, cache.filled)
    sure = contrastive_loss(*args, torch.zeros(3))
    assert sure.item() == pytest.approx(contrastive_loss(*args).item())
    rare = contrastive_loss(*args, torch.tensor([0.0, 0.0, math.log(0.01)]))
    assert rare.item() > sure.item()
    only_row_1 = torch.tensor([False, True, False])
    u, t, v = unit(users.tolist()), unit(targets.tolist()), unit([[0.0, 1.0]])
    windowed = contrastive_loss(users, targets, torch.tensor([0]), cache, history_mask([[]], 3), None, 1.0, only_row_1)
    assert windowed.item() == pytest.approx(manual_ce([float(u[0] @ t[0]), float(u[0] @ v[0])], 0), abs=1e-5)


def test_uniform_draws_join_the_probability_of_being_in_the_window() -> None:
    batch, steps, uniform, pool = 4, 3, 5, 50
    log_q = torch.log(torch.tensor([2.0, 0.4, 0.0]))  # the last item is never a target
    q = torch.tensor([0.5, 0.1, 0.0])
    expected = torch.log(1 - (1 - q) ** (batch * steps) * (1 - uniform / pool) ** steps)
    torch.testing.assert_close(log_drawn_in_window(log_q, batch, steps, uniform, pool), expected)
    torch.testing.assert_close(log_drawn_in_window(log_q, batch, 1, uniform, pool)[2], torch.tensor(math.log(0.1)))
    assert log_drawn_in_window(log_q, batch, steps, pool, pool).tolist() == [0.0, 0.0, 0.0]  # all drawn surely
    assert torch.isneginf(log_drawn_in_window(log_q, batch, 0, uniform, pool)).all()  # an empty window


def test_uniform_columns_are_negatives_with_gradients_and_their_own_correction() -> None:
    cache = NegativeCache.empty(4, torch.zeros(2))  # nothing cached: in-batch columns only
    users = torch.tensor([[1.0, 0.2], [0.1, 1.0]], requires_grad=True)
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.1], [1.0, 0.0]], requires_grad=True)
    columns = torch.tensor([0, 1, 2, 3, 0])  # targets 0 and 1, uniform draws 2, 3 and 0 (user 0's own target)
    owned = history_mask([[], [3]], 4)  # user 1 owns item 3
    log_q = torch.log(torch.tensor([1.0, 0.5, 0.1, 0.1]))
    loss = contrastive_loss(users, items, columns, cache, owned, log_q, 1.0)
    u, v = unit(users.tolist()), unit(items.tolist())
    logits = (u @ v.T - log_q[columns]).tolist()
    expected = (manual_ce([logits[0][0], logits[0][1], logits[0][2], logits[0][3]], 0)  # column 4 repeats the target
                + manual_ce([logits[1][0], logits[1][1], logits[1][2], logits[1][4]], 1)) / 2  # item 3 is owned
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert items.grad[2].abs().sum() > 0 and items.grad[3].abs().sum() > 0  # the item side learns from them


def test_the_column_correction_adds_the_uniform_draws_to_the_expected_count(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    samples = TrainingSamples(ds, make_split(ds, "leave-one-out", 0.2, 0), 50, 8)
    warm = torch.zeros(len(samples.item_ids), dtype=torch.bool)
    warm[samples.warm_codes] = True
    mixed = samples.log_q_with_uniform(4)
    expected = samples.log_q.exp() + 4 / len(samples.warm_codes)
    torch.testing.assert_close(mixed[warm], expected[warm].log())
    assert torch.isneginf(mixed[~warm]).all()
    torch.testing.assert_close(samples.log_q_with_uniform(0), samples.log_q)


def test_config_checks_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--batch-size"):
        ContrastiveConfig(batch_size=1)
    with pytest.raises(ValueError, match="--steps"):
        ContrastiveConfig(steps=0)
    with pytest.raises(ValueError, match="--dataset"):
        ContrastiveConfig(dataset="nope")
    with pytest.raises(ValueError, match="--mixed-precision"):
        ContrastiveConfig(mixed_precision="fp16")
    with pytest.raises(ValueError, match="--lr-schedule"):
        ContrastiveConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="--cache-window"):
        ContrastiveConfig(cache_window=-1)
    with pytest.raises(ValueError, match="--uniform-negatives"):
        ContrastiveConfig(uniform_negatives=-1)
    with pytest.raises(ValueError, match="--popularity-prior"):
        ContrastiveConfig(popularity_prior=0.1)  # only with --frozen-items
    with pytest.raises(ValueError, match="--popularity-prior"):
        ContrastiveConfig(frozen_items=True, popularity_prior=-0.1)


def tiny_config(data: Path, out: Path, **overrides: object) -> ContrastiveConfig:
    settings: dict = dict(dataset="ml-1m-zip", data_path=data, model="tiny", steps=12, batch_size=8, valid_every=4,
                          valid_users=20, lr=5e-3, warmup_steps=2, cache_window=2, uniform_negatives=4,
                          checkpoint_minutes=1e-6,
                          out_dir=out)
    return ContrastiveConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("cl") / "data")


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_contrastive(tiny_config(data, tmp_path_factory.mktemp("cl") / "adapter"))


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_training_writes_an_adapter_with_metadata(trained: Path) -> None:
    meta = json.loads((trained / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 12
    assert meta["base_model"]["model_id"] == "tiny-llama" and meta["template_version"] == "v1"
    assert meta["data"]["dataset"] == "ml-1m-zip" and meta["split"]["protocol"] == "leave-one-out"
    assert [p["step"] for p in meta["curve"]] == [0, 4, 8, 12]  # step 0: the base model, before any training
    start, *trained_points = meta["curve"]
    assert start["loss"] is None and start["seconds"] == 0 and 0 <= start["NDCG@10"] <= 1
    assert all(np.isfinite(p["loss"]) and 0 <= p["NDCG@10"] <= 1 and p["samples_per_s"] > 0 for p in trained_points)
    assert meta["best_step"] in (0, 4, 8, 12)
    assert start["fresh_row_bias"] is None and all(np.isfinite(p["fresh_row_bias"]) for p in trained_points)
    n_items = meta["data"]["items"]
    assert all(1 <= p["top10_median_popularity_rank"] <= n_items and 10 <= p["top10_distinct_items"] <= 10 * 20
               and p["target_median_popularity_rank"] == start["target_median_popularity_rank"] for p in meta["curve"])
    assert all(p["best_popularity_prior"]["weight"] in contrastive.PRIOR_WEIGHTS
               and 0 <= p["best_popularity_prior"]["NDCG@10"] <= 1 for p in meta["curve"])
    saved = torch.load(trained / "resume.pt", weights_only=True)  # written after the last validation's re-encoding
    assert saved["cache_filled"].any() and saved["cache_refilled_at"] == 12 and (saved["cache_written_at"] <= 12).all()
    # B starts at zero: the last step's weights moved (the saved adapter is the best step's, maybe step 0's)
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in saved["lora"].items())
    assert lora_weights(trained).keys() == saved["lora"].keys()


def test_rerun_is_a_no_op_and_other_settings_are_refused(trained: Path, data: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contrastive, "load_dataset", lambda *a: pytest.fail("a finished run must not reload"))
    assert train_contrastive(tiny_config(data, trained)) == trained
    with pytest.raises(ValueError, match="temperature"):
        train_contrastive(tiny_config(data, trained, temperature=0.1))


def test_interrupted_training_resumes_to_the_same_adapter_with_checkpointing_switched_on(
        trained: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradient checkpointing recomputes activations (dropout masks included), so it may change between runs."""
    real_step = contrastive._train_step
    calls = {"n": 0}

    def dies_at_step_7(*args: object, **kwargs: object) -> float:
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(contrastive, "_train_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train_contrastive(tiny_config(data, tmp_path / "a"))
    monkeypatch.setattr(contrastive, "_train_step", real_step)
    resumed = train_contrastive(tiny_config(data, tmp_path / "a", gradient_checkpointing=True))
    first, second = lora_weights(trained), lora_weights(resumed)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=1e-5, rtol=1e-4)
    curve = lambda folder: [(p["step"], round(p["NDCG@10"], 6)) for p in json.loads((folder / ADAPTER_META).read_text())["curve"]]  # noqa: E731
    assert curve(trained) == curve(resumed)


@pytest.fixture(scope="module")
def moved(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's adapter with its last step's weights (the best by validation on the random tiny model may be
    step 0's, all-zero B, which changes no vector)."""
    import shutil

    from safetensors.torch import save_file

    folder = shutil.copytree(trained, tmp_path_factory.mktemp("cl") / "last-step")
    save_file(torch.load(trained / "resume.pt", weights_only=True)["lora"], folder / "adapter_model.safetensors")
    return folder


def test_adapter_loads_and_moves_the_index_and_cache_keys(moved: Path, data: Path, tmp_path: Path) -> None:
    base, tuned = load_model("tiny"), load_model("tiny", adapter=moved)
    assert tuned.fingerprint.adapter_hash and tuned.fingerprint != base.fingerprint
    assert tuned.fingerprint.to_json() != base.fingerprint.to_json()  # reasoning cache keys carry this
    base_engine, tuned_engine = TransformersEngine(base), TransformersEngine(tuned)
    text = ["[Film number 1 (1971)] (5)"]
    assert not np.allclose(base_engine.embed_direct(text), tuned_engine.embed_direct(text), atol=1e-6)
    build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data, out_dir=tmp_path / "base"), base_engine)
    build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data, out_dir=tmp_path / "tuned"), tuned_engine)
    assert ItemStore.load(tmp_path / "tuned", expect=tuned.fingerprint).manifest.fingerprint == tuned.fingerprint
    with pytest.raises(ManifestMismatchError, match="adapter_hash"):
        ItemStore.load(tmp_path / "base", expect=tuned.fingerprint)  # a stale index is refused


def test_eval_puts_trained_and_zero_shot_direct_in_one_table(moved: Path, data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path / "artifacts"))
    for adapter in (None, moved):
        build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data),
                    TransformersEngine(load_model("tiny", adapter=adapter)))
    config = EvalConfig(dataset="ml-1m-zip", data_path=data, model="tiny", adapter=moved,
                        rankers=("popular", "direct", "direct-zero-shot"), llm_users=10, reasoning_users=5, ratings=False,
                        bootstrap=20, out_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    report = json.loads(run_eval(config, "test")[0].read_text())
    own = {r["ranker"]: r for r in report["rows"] if r["own"]}
    assert own["direct"]["users"] == own["direct-zero-shot"]["users"] == 10
    assert own["direct"]["metrics"] != own["direct-zero-shot"]["metrics"]
    assert "LoRA adapter" in report["header"]["models"] and "no adapter" in report["header"]["models"]
    with pytest.raises(ValueError, match="--adapter"):
        EvalConfig(rankers=("direct-zero-shot",))


def test_training_report_has_the_curve_speed_and_provenance(trained: Path, tmp_path: Path) -> None:
    from trainer.cl_report import write_training_report

    json_path, md_path, png_path = write_training_report(trained, tmp_path, "reasonrec train-cl (test)")
    markdown = md_path.read_text()
    for needle in ("**command**", "**data**", "**speed**", "**machine**", "samples/s", "| 12 |", "top-10 popularity",
                   " items |"):
        assert needle in markdown
    assert json.loads(json_path.read_text())["steps"] == 12 and png_path.stat().st_size > 1000


def test_the_cache_starts_from_the_base_models_index_when_there_is_one(data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path / "artifacts"))
    engine = TransformersEngine(load_model("tiny"))
    result = build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data), engine)
    store = ItemStore.load(result.out_dir)
    real_encode, real_validate = contrastive._encode, contrastive._validate
    encoded, centers = [], {}

    def spy_encode(*args: object, **kwargs: object) -> torch.Tensor:
        encoded.append(len(args[3]))  # the item codes
        return real_encode(*args, **kwargs)

    def spy_validate(encoder, model, data, cache, valid, progress, *rest: object) -> None:  # noqa: ANN001
        real_validate(encoder, model, data, cache, valid, progress, *rest)
        centers[progress.step] = cache.center.clone()

    monkeypatch.setattr(contrastive, "_encode", spy_encode)
    monkeypatch.setattr(contrastive, "_validate", spy_validate)
    train_contrastive(tiny_config(data, tmp_path / "adapter", steps=1, valid_every=1))
    torch.testing.assert_close(centers[0], torch.as_tensor(store.center, dtype=torch.float32))
    assert len(encoded) == 1 and encoded[0] > 1  # no encoding at the start; every item at step 1's validation
    assert not torch.allclose(centers[1], centers[0])  # step 1's validation re-encoded and re-centered


def test_the_validation_prior_adds_weighted_log_popularity_to_the_cosine() -> None:
    cache = cache_of([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cache.filled[2] = False  # an unfilled row is never scorable
    users = {"u": unit([[1.0, 0.0]])[0]}
    log_counts = torch.log1p(torch.tensor([0.0, 99.0, 5.0]))
    example = contrastive.Example("u", [], None)  # type: ignore[arg-type]
    plain = contrastive._CacheRanker(users, cache, log_counts).scores([example])[0]
    assert plain[:2].tolist() == pytest.approx([1.0, 0.0]) and plain[2] == -np.inf
    with_prior = contrastive._CacheRanker(users, cache, log_counts, 0.5).scores([example])[0]
    assert with_prior[:2].tolist() == pytest.approx([1.0, 0.5 * math.log(100.0)]) and with_prior[2] == -np.inf
    assert with_prior.argmax() == 1  # a popular enough item overtakes the nearest one


def test_uniform_items_are_columns_of_their_step_then_rows_of_the_window(data: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(data, tmp_path / "adapter", steps=3, valid_every=3, cache_window=2, uniform_negatives=5)
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    samples = TrainingSamples(ds, split, config.recent_targets, config.batch_size)
    counts = np.bincount([samples.code[x.item_id] for h in split.train.values() for x in h],
                         minlength=len(samples.item_ids))
    ranks = contrastive.popularity_ranks(PopularityRanker(samples.item_ids, split.train).row)
    assert sorted(ranks) == list(range(1, len(counts) + 1)) and counts[ranks == 1] == counts.max()
    assert all(counts[ranks == r] >= counts[ranks == r + 1] for r in range(1, len(counts)))
    drawn = [set(samples.uniform_items(step, 5, config.seed).tolist()) for step in range(3)]
    assert len(drawn[0]) == 5 and drawn[0] <= set(samples.warm_codes) and drawn[0] != drawn[1]
    assert samples.uniform_items(0, 5, config.seed).tolist() == samples.uniform_items(0, 5, config.seed).tolist()
    targets = [[samples.code[e.target.item_id] for e in samples.batch(step, config.batch_size, config.seed)]
               for step in range(3)]
    real_loss, seen = contrastive.contrastive_loss, []

    def spy_loss(users, items, columns, cache, owned, log_q, temperature, rows, rows_log_q) -> torch.Tensor:  # noqa: ANN001
        seen.append({"columns": columns.tolist(), "items_grad": items.requires_grad, "log_q": log_q,
                     "rows": set(torch.nonzero(rows).flatten().tolist()), "rows_log_q": rows_log_q,
                     "units": cache.units.clone()})
        return real_loss(users, items, columns, cache, owned, log_q, temperature, rows, rows_log_q)

    monkeypatch.setattr(contrastive, "contrastive_loss", spy_loss)
    train_contrastive(config)
    for step in range(3):  # the users' targets, then this step's uniform items, all with gradients
        assert seen[step]["columns"][:8] == targets[step] and set(seen[step]["columns"][8:]) == drawn[step]
        assert seen[step]["items_grad"]
    torch.testing.assert_close(seen[0]["log_q"], samples.log_q_with_uniform(5))
    # the window: empty at the start, then the columns written by the last two steps
    assert seen[0]["rows"] == set() and seen[1]["rows"] == set(targets[0]) | drawn[0]
    assert seen[2]["rows"] == set(targets[0]) | drawn[0] | set(targets[1]) | drawn[1]
    rows = sorted(seen[1]["rows"])
    torch.testing.assert_close(seen[1]["rows_log_q"][rows],
                               log_drawn_in_window(samples.log_q, 8, 1, 5, len(samples.warm_codes))[rows])
    # step 1 ran a model that step 0 updated: the rows it wrote moved away from the base vectors
    moved = sorted(drawn[1] - drawn[0] - set(targets[0]))
    assert moved and not torch.allclose(seen[2]["units"][moved], seen[0]["units"][moved])


def test_a_finished_run_continues_with_more_steps(trained: Path, data: Path, tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(trained, tmp_path / "more")
    train_contrastive(tiny_config(data, folder, steps=14))
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert meta["steps"] == 14 and meta["status"] == "done" and meta["curve"][-1]["step"] == 14


def test_a_smaller_steps_ends_an_interrupted_run_with_its_best_adapter(data: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = contrastive._train_step

    def stopped_at_step_6(*args: object) -> float:
        if args[-1] == 6:  # the step number is the last argument
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(contrastive, "_train_step", stopped_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_contrastive(tiny_config(data, tmp_path / "a"))
    monkeypatch.setattr(contrastive, "_train_step", lambda *a, **k: pytest.fail("no step is left to train"))
    folder = train_contrastive(tiny_config(data, tmp_path / "a", steps=5))
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 6 and meta["best_step"] in (0, 4)
    assert (folder / "adapter_model.safetensors").is_file()


def test_cosine_schedule_warms_up_then_decays_to_a_tenth_and_fixes_the_run_length(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = contrastive._train_step
    rates: list[float] = []

    def recording_step(*args: object) -> float:
        rates.append(args[2].param_groups[0]["lr"])  # the optimizer
        return real_step(*args)

    monkeypatch.setattr(contrastive, "_train_step", recording_step)
    config = tiny_config(data, tmp_path / "cosine", steps=6, valid_every=6, lr_schedule="cosine")
    folder = train_contrastive(config)
    assert rates == pytest.approx([5e-3 / 3, 5e-3 * 2 / 3, 5e-3, 5e-3 * (0.1 + 0.9 * 0.75), 5e-3 * (0.1 + 0.9 * 0.25),
                                   5e-4])
    assert [ContrastiveConfig(lr_schedule="constant", warmup_steps=2).lr_factor(s) for s in range(4)] == \
        pytest.approx([1 / 3, 2 / 3, 1, 1])
    with pytest.raises(ValueError, match=r"other settings \(steps\)"):  # its steps set the whole schedule
        train_contrastive(tiny_config(data, tmp_path / "cosine", steps=8, valid_every=6, lr_schedule="cosine"))
    from trainer.cl_report import write_training_report

    _, markdown, _ = write_training_report(folder, tmp_path / "report", "reasonrec train-cl (test)")
    assert "lr 0.005 cosine-decayed to a tenth;" in markdown.read_text()


def test_bf16_autocast_trains_too(data: Path, tmp_path: Path) -> None:
    folder = train_contrastive(tiny_config(data, tmp_path / "bf16", steps=2, valid_every=2, mixed_precision="bf16"))
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert meta["steps"] == 2 and np.isfinite(meta["curve"][-1]["loss"])


def test_frozen_items_train_only_the_user_side_against_the_fixed_exact_cache(data: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(data, tmp_path / "frozen", steps=4, valid_every=2, frozen_items=True, popularity_prior=0.3)
    ds = load_dataset(config.dataset, config.data_path)
    samples = TrainingSamples(ds, make_split(ds, config.protocol), config.recent_targets, config.batch_size)
    real_encode, real_loss = contrastive._encode, contrastive.full_softmax_loss
    encoded, seen = [], []

    def spy_encode(*args: object, **kwargs: object) -> torch.Tensor:
        encoded.append(len(args[3]))
        return real_encode(*args, **kwargs)

    def spy_loss(users, codes, cache, owned, temperature, prior) -> torch.Tensor:  # noqa: ANN001
        seen.append({"codes": codes.tolist(), "units": cache.units.clone(), "prior": prior})
        return real_loss(users, codes, cache, owned, temperature, prior)

    monkeypatch.setattr(contrastive, "_encode", spy_encode)
    monkeypatch.setattr(contrastive, "full_softmax_loss", spy_loss)
    monkeypatch.setattr(contrastive, "contrastive_loss", lambda *a: pytest.fail("no sampled loss with frozen items"))
    folder = train_contrastive(config)
    assert encoded == [len(samples.warm_codes)]  # the base model's items once, at the start; never re-encoded
    assert len(seen) == 4 and all(torch.equal(s["units"], seen[0]["units"]) for s in seen)
    assert seen[1]["codes"] == [samples.code[e.target.item_id] for e in samples.batch(1, 8, config.seed)]
    counts = PopularityRanker(samples.item_ids, make_split(ds, config.protocol).train).row
    torch.testing.assert_close(seen[0]["prior"], 0.3 * torch.log1p(torch.as_tensor(counts, dtype=torch.float32)))
    saved = torch.load(folder / "resume.pt", weights_only=True)
    torch.testing.assert_close(saved["cache_units"], seen[0]["units"])
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in saved["lora"].items())
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert meta["config"]["frozen_items"] and [p["step"] for p in meta["curve"]] == [0, 2, 4]
    assert all(p["fresh_row_bias"] is None for p in meta["curve"])
    assert meta["method"].startswith("contrastive LoRA on user prompts only") and "prior 0.3" in meta["method"]
    from trainer.cl_report import write_training_report

    markdown = write_training_report(folder, tmp_path / "report", "reasonrec train-cl --frozen-items (test)")[1].read_text()
    assert "full softmax over every item's base-model vector" in markdown and "0.3 x log(1 + training count)" in markdown


@pytest.fixture(scope="module")
def user_side(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user-side adapter (`--frozen-items`) with its last step's weights (see `moved`)."""
    from safetensors.torch import save_file

    folder = train_contrastive(tiny_config(data, tmp_path_factory.mktemp("cl") / "user-side", steps=3, valid_every=3,
                                           frozen_items=True))
    save_file(torch.load(folder / "resume.pt", weights_only=True)["lora"], folder / "adapter_model.safetensors")
    return folder


def test_a_user_side_adapter_encodes_items_with_the_base_model_and_serves_from_its_index(
        user_side: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.loading import is_user_side_adapter
    from model.merge import merge_adapter
    from model.paths import default_index_dir
    from model.transformers_engine import load_engine

    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path / "artifacts"))
    assert is_user_side_adapter(user_side) and not is_user_side_adapter(None)
    base, engine = TransformersEngine(load_model("tiny")), load_engine("tiny", user_side)
    assert engine.fingerprint.adapter_hash and engine.item_fingerprint == base.fingerprint
    users, items = ["[Film number 1 (1971)] (5)"], ["Film number 2 (1972)"]
    np.testing.assert_allclose(engine.embed_items(items), base.embed_items(items), atol=1e-6)
    assert not np.allclose(engine.embed_direct(users), base.embed_direct(users), atol=1e-6)
    built = build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data), base)
    assert built.out_dir == default_index_dir("ml-1m-zip", engine.item_fingerprint)
    assert build_index(IndexJobConfig(dataset="ml-1m-zip", data_path=data), engine).skipped  # the base index serves
    config = EvalConfig(dataset="ml-1m-zip", data_path=data, model="tiny", adapter=user_side,
                        rankers=("direct", "direct-zero-shot"), llm_users=10, reasoning_users=5, ratings=False,
                        bootstrap=20, out_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    report = json.loads(run_eval(config, "test")[0].read_text())
    assert "user prompts only (items: the base model)" in report["header"]["models"]
    own = {r["ranker"]: r for r in report["rows"] if r["own"]}
    assert own["direct"]["metrics"] != own["direct-zero-shot"]["metrics"]
    with pytest.raises(ValueError, match="user-side adapter"):
        merge_adapter("tiny", user_side, tmp_path / "merged")
