"""Contrastive LoRA: the item table, the settings and their recipe files, and the training job on the tiny model
(learning, validation, resume after an interruption, continuing and ending runs, the adapter as an artifact that
the loader, the index and hence the cache keys pick up, the training report). The loss itself is checked in
`test_full_softmax.py`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cl_helpers import lora_weights, table_of, tiny_config, unit
from torch.nn import functional as F
from trainer_helpers import write_cycle_ml1m

import trainer.train.contrastive.job as contrastive
from indexer.core.fingerprint import ManifestMismatchError
from indexer.store import ItemStore
from model.engines.loading import load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import TEMPLATE_VERSION
from trainer.config_args import load_recipe
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.evaluation.config import EvalConfig
from trainer.evaluation.job import run_eval
from trainer.train.contrastive.config import ContrastiveConfig
from trainer.train.contrastive.job import ADAPTER_META, train_contrastive
from trainer.train.contrastive.loss import ItemTable
from trainer.train.contrastive.samples import TrainingSamples
from trainer.train.index import IndexJobConfig, build_index

RECIPES = Path(__file__).resolve().parents[4] / "trainer" / "recipes"


def test_refill_recenters_on_the_new_mean_and_update_keeps_the_center() -> None:
    table = ItemTable.empty(4, torch.zeros(2))
    raw = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, -1.0]])
    table.refill(torch.tensor([0, 1, 2]), raw)
    torch.testing.assert_close(table.center, raw.mean(dim=0))
    torch.testing.assert_close(table.units[:3], F.normalize(raw - raw.mean(dim=0), dim=-1))
    assert table.filled.tolist() == [True, True, True, False]
    table.update(torch.tensor([3]), torch.tensor([[6.0, 0.5]], requires_grad=True))  # an item missing from the index
    torch.testing.assert_close(table.center, raw.mean(dim=0))
    torch.testing.assert_close(table.units[3], F.normalize(torch.tensor([6.0, 0.5]) - raw.mean(dim=0), dim=0))
    assert table.filled.all() and not table.units.requires_grad
    table.refill(torch.tensor([1, 2]), raw[1:])  # a refill forgets rows it does not hold
    assert table.filled.tolist() == [False, True, True, False]
    torch.testing.assert_close(table.center, raw[1:].mean(dim=0))


def test_config_checks_name_the_flag() -> None:
    for flag, settings in (("--batch-size", {"batch_size": 0}), ("--steps", {"steps": 0}),
                           ("--dataset", {"dataset": "nope"}), ("--mixed-precision", {"mixed_precision": "fp16"}),
                           ("--item-draws", {"item_draws": 0}), ("--valid-every", {"valid_every": 0}),
                           ("--temperature", {"temperature": 0.0}), ("--lr", {"lr": -1.0}),
                           ("--warmup-steps", {"warmup_steps": -1}), ("--lora-top-layers", {"lora_top_layers": -1}),
                           ("--sample-pool", {"sample_pool": -1})):
        with pytest.raises(ValueError, match=flag):
            ContrastiveConfig(**settings)


def test_the_learning_rate_warms_up_linearly_then_stays_constant() -> None:
    config = ContrastiveConfig(warmup_steps=2)
    assert [config.lr_factor(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert ContrastiveConfig(warmup_steps=0).lr_factor(0) == 1.0


def test_the_cpu_recipe_file_writes_out_the_defaults() -> None:
    recipe = load_recipe(RECIPES / "cl-cpu.toml", ContrastiveConfig)
    own = {name for name in ContrastiveConfig.__dataclass_fields__ if name != "out_dir"}
    own -= {"dataset", "data_path", "protocol", "cold_frac", "split_seed"}  # the data is the command's choice
    assert set(recipe) == own
    assert ContrastiveConfig(**recipe) == ContrastiveConfig()
    defaults = ContrastiveConfig()
    assert (defaults.sample_pool, defaults.lora_top_layers, defaults.lr, defaults.steps, defaults.valid_every) == \
        (960, 4, 2e-4, 120, 10)  # the Makefile's CL_RECIPE


def test_the_gpu_recipe_is_a_valid_config_on_all_layers_without_a_pool() -> None:
    config = ContrastiveConfig(**load_recipe(RECIPES / "cl-gpu.toml", ContrastiveConfig))
    assert (config.sample_pool, config.lora_top_layers, config.mixed_precision) == (0, 0, "bf16")
    assert (config.batch_size, config.steps, config.valid_every) == (64, 2000, 100)


def test_a_recipe_with_an_unknown_key_names_it_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('steps = 10\nfull_softmax = true\n')
    with pytest.raises(ValueError, match=r"typo\.toml.*'full_softmax'"):
        load_recipe(path, ContrastiveConfig)
    path.write_text('steps = 10\n')
    assert load_recipe(path, ContrastiveConfig) == {"steps": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("cl") / "data")


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_contrastive(tiny_config(data, tmp_path_factory.mktemp("cl") / "adapter"))


def test_training_writes_an_adapter_with_metadata(trained: Path) -> None:
    meta = json.loads((trained / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 12
    assert meta["base_model"]["model_id"] == "tiny-llama" and meta["template_version"] == TEMPLATE_VERSION
    assert meta["data"]["dataset"] == "ml-1m-zip" and meta["split"]["protocol"] == "leave-one-out"
    assert [p["step"] for p in meta["curve"]] == [0, 4, 8, 12]  # step 0: the base model, before any training
    start, *trained_points = meta["curve"]
    assert start["loss"] is None and start["seconds"] == 0 and 0 <= start["NDCG@10"] <= 1
    assert all(np.isfinite(p["loss"]) and 0 <= p["NDCG@10"] <= 1 and p["samples_per_s"] > 0 for p in trained_points)
    assert meta["best_step"] in (0, 4, 8, 12)
    n_items = meta["data"]["items"]
    assert all(1 <= p["top10_median_popularity_rank"] <= n_items and 10 <= p["top10_distinct_items"] <= 10 * 20
               and p["target_median_popularity_rank"] == start["target_median_popularity_rank"] for p in meta["curve"])
    assert all(p["best_popularity_prior"]["weight"] in contrastive.PRIOR_WEIGHTS
               and 0 <= p["best_popularity_prior"]["NDCG@10"] <= 1 for p in meta["curve"])
    assert meta["method"].startswith("contrastive LoRA on user and item prompts: full softmax")
    saved = torch.load(trained / "resume.pt", weights_only=True)  # written after the last validation's re-encoding
    assert saved["table_filled"].any() and saved["table_units"].shape[0] == n_items
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
    def curve(folder: Path) -> list[tuple[int, float]]:
        return [(p["step"], round(p["NDCG@10"], 6)) for p in json.loads((folder / ADAPTER_META).read_text())["curve"]]

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
                        rankers=("popular", "direct", "direct-zero-shot"), llm_users=10, reasoning_users=5,
                        ratings=False, bootstrap=20, out_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    report = json.loads(run_eval(config, "test")[0].read_text())
    own = {r["ranker"]: r for r in report["rows"] if r["own"]}
    assert own["direct"]["users"] == own["direct-zero-shot"]["users"] == 10
    assert own["direct"]["metrics"] != own["direct-zero-shot"]["metrics"]
    assert "LoRA adapter" in report["header"]["models"] and "no adapter" in report["header"]["models"]
    with pytest.raises(ValueError, match="--adapter"):
        EvalConfig(rankers=("direct-zero-shot",))


def test_training_report_has_the_curve_speed_and_provenance(trained: Path, tmp_path: Path) -> None:
    from trainer.train.contrastive.report import write_training_report

    json_path, md_path, png_path = write_training_report(trained, tmp_path, "reasonrec train-cl (test)")
    markdown = md_path.read_text()
    for needle in ("**command**", "**data**", "**speed**", "**machine**", "samples/s", "| 12 |", "top-10 popularity",
                   " items |", "lr 0.005 after 2 warm-up steps", "4 items drawn per step"):
        assert needle in markdown
    assert json.loads(json_path.read_text())["steps"] == 12 and png_path.stat().st_size > 1000


def test_the_table_starts_from_the_base_models_index_when_there_is_one(data: Path, tmp_path: Path,
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

    def spy_validate(encoder, model, data, table, valid, progress, *rest: object) -> None:  # noqa: ANN001
        real_validate(encoder, model, data, table, valid, progress, *rest)
        centers[progress.step] = table.center.clone()

    monkeypatch.setattr(contrastive, "_encode", spy_encode)
    monkeypatch.setattr(contrastive, "_validate", spy_validate)
    train_contrastive(tiny_config(data, tmp_path / "adapter", steps=1, valid_every=1))
    torch.testing.assert_close(centers[0], torch.as_tensor(store.center, dtype=torch.float32))
    assert len(encoded) == 1 and encoded[0] > 1  # no encoding at the start; every item at step 1's validation
    assert not torch.allclose(centers[1], centers[0])  # step 1's validation re-encoded and re-centered


def test_the_validation_prior_adds_weighted_log_popularity_to_the_cosine() -> None:
    table = table_of([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    table.filled[2] = False  # an unfilled row is never scorable
    users = {"u": unit([[1.0, 0.0]])[0]}
    log_counts = torch.log1p(torch.tensor([0.0, 99.0, 5.0]))
    example = contrastive.Example("u", [], None)  # type: ignore[arg-type]
    plain = contrastive._TableRanker(users, table, log_counts).scores([example])[0]
    assert plain[:2].tolist() == pytest.approx([1.0, 0.0]) and plain[2] == -np.inf
    with_prior = contrastive._TableRanker(users, table, log_counts, 0.5).scores([example])[0]
    assert with_prior[:2].tolist() == pytest.approx([1.0, 0.5 * math.log(100.0)]) and with_prior[2] == -np.inf
    assert with_prior.argmax() == 1  # a popular enough item overtakes the nearest one


def test_popularity_ranks_follow_the_training_counts(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    split = make_split(ds, "leave-one-out")
    samples = TrainingSamples(ds, split, 50)
    counts = np.bincount([samples.code[x.item_id] for h in split.train.values() for x in h],
                         minlength=len(samples.item_ids))
    np.testing.assert_array_equal(samples.train_counts.numpy(), counts)
    ranks = contrastive.popularity_ranks(samples.train_counts.numpy())
    assert sorted(ranks) == list(range(1, len(counts) + 1)) and counts[ranks == 1] == counts.max()
    assert all(counts[ranks == r] >= counts[ranks == r + 1] for r in range(1, len(counts)))


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


def test_bf16_autocast_trains_too_after_a_linear_warm_up(data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_step, rates = contrastive._train_step, []

    def recording_step(*args: object) -> float:
        rates.append(args[2].param_groups[0]["lr"])  # the optimizer
        return real_step(*args)

    monkeypatch.setattr(contrastive, "_train_step", recording_step)
    folder = train_contrastive(tiny_config(data, tmp_path / "bf16", steps=3, valid_every=3, mixed_precision="bf16"))
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert meta["steps"] == 3 and np.isfinite(meta["curve"][-1]["loss"])
    assert rates == pytest.approx([5e-3 / 3, 5e-3 * 2 / 3, 5e-3])
