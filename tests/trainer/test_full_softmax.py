"""Joint training on a full softmax (`ContrastiveConfig.full_softmax`): the importance-weighted item draws are an
unbiased estimate of the softmax's push, the item-side term carries exactly the full softmax's gradient to fresh
item vectors, and the training job on the tiny model scores users against a table that no step overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import trainer.contrastive as contrastive
from model.prompts import item_prompt
from trainer.cl_samples import TrainingSamples
from trainer.contrastive import ADAPTER_META, train_contrastive, validation_examples
from trainer.contrastive_config import ContrastiveConfig
from trainer.contrastive_loss import NegativeCache, draw_items, history_mask, item_side_term, table_logits
from trainer.data import load_dataset
from trainer.protocols import make_split
from trainer.splits import Example

from test_contrastive import tiny_config
from test_eval_job import write_cycle_ml1m


def test_the_draws_estimate_each_users_softmax_push_without_bias() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 12, generator=generator) * 3, dim=-1)
    probs[:, 11] = 0.0  # a masked item: never pushed
    probs = probs / probs.sum(dim=-1, keepdim=True)
    values = torch.randn(12, 4, generator=generator)  # any per-item quantity, e.g. a gradient
    exact = probs @ values
    total = torch.zeros_like(exact)
    rounds = 4000
    for _ in range(rounds):
        codes, weights = draw_items(probs, torch.arange(12), 8, generator)
        assert len(codes.unique()) == len(codes) and weights.shape == (3, len(codes))
        total += weights @ values[codes]
    torch.testing.assert_close(total / rounds, exact, atol=0.03, rtol=0.0)


def test_the_item_term_gives_fresh_item_vectors_the_full_softmax_gradient_and_adds_nothing() -> None:
    torch.manual_seed(0)
    raw_items = torch.randn(6, 3) + torch.tensor([2.0, 0.0, 0.0])
    cache = NegativeCache.empty(6, raw_items.mean(dim=0))
    cache.update(torch.arange(6), raw_items, step=0)
    users = torch.randn(2, 3, requires_grad=True)
    codes, owned, tau = torch.tensor([1, 4]), history_mask([[0, 1], [4]], 6), 0.2
    logits = table_logits(users, codes, cache, owned, tau)
    probs = logits.detach().softmax(dim=-1)
    fresh = raw_items.clone().requires_grad_(True)  # every item's vector, passed fresh: the estimate is exact
    term = item_side_term(users, fresh[codes], fresh, probs, cache, tau)
    assert term.item() == 0.0
    term.backward()
    # reference: the same cross-entropy with the table's rows differentiable
    reference_items = raw_items.clone().requires_grad_(True)
    u = cache.unit(users.detach())
    reference = u @ cache.unit(reference_items).T / tau
    mask = owned.clone()
    mask[torch.arange(2), codes] = False
    F.cross_entropy(reference.masked_fill(mask, float("-inf")), codes).backward()
    torch.testing.assert_close(fresh.grad, reference_items.grad)
    assert users.grad is None  # users learn from the table's logits, not from this term


def test_config_checks_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--full-softmax"):
        ContrastiveConfig(full_softmax=True, frozen_items=True)
    with pytest.raises(ValueError, match="--item-draws"):
        ContrastiveConfig(full_softmax=True, item_draws=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("full") / "data")


def test_a_full_softmax_run_trains_items_against_a_table_only_validation_rewrites(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(data, tmp_path / "full", steps=6, valid_every=3, full_softmax=True, item_draws=5)
    ds = load_dataset(config.dataset, config.data_path)
    samples = TrainingSamples(ds, make_split(ds, config.protocol), config.recent_targets, config.batch_size)
    real_term = contrastive.item_side_term
    seen: list[dict] = []

    def spy_term(users, targets, drawn, weights, cache, temperature) -> torch.Tensor:  # noqa: ANN001
        seen.append({"units": cache.units.clone(), "targets": len(targets), "drawn": len(drawn),
                     "trainable": targets.requires_grad and drawn.requires_grad})
        return real_term(users, targets, drawn, weights, cache, temperature)

    monkeypatch.setattr(contrastive, "item_side_term", spy_term)
    monkeypatch.setattr(contrastive, "contrastive_loss", lambda *a: pytest.fail("no sampled loss with a full softmax"))
    folder = train_contrastive(config)
    assert len(seen) == 6 and all(s["trainable"] and s["targets"] == 8 and 1 <= s["drawn"] <= 5 for s in seen)
    # steps 1-3 see the table of step 0, steps 4-6 the one re-encoded at the validation after step 3
    assert all(torch.equal(seen[i]["units"], seen[0]["units"]) for i in (1, 2))
    assert all(torch.equal(seen[i]["units"], seen[3]["units"]) for i in (4, 5))
    assert not torch.equal(seen[3]["units"], seen[0]["units"])
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert [p["step"] for p in meta["curve"]] == [0, 3, 6] and all(p["fresh_row_bias"] is None for p in meta["curve"])
    assert "full softmax over every item's vector" in meta["method"] and "5 items drawn" in meta["method"]
    assert len(samples.warm_codes) == int(torch.load(folder / "resume.pt", weights_only=True)["cache_filled"].sum())
    from trainer.cl_report import write_training_report

    paths = write_training_report(folder, tmp_path / "report", "reasonrec train-cl --full-softmax (test)", "full-run")
    assert [p.name for p in paths] == ["full-run.json", "full-run.md", "full-run.png"]
    assert "5 items drawn per step from the batch's softmax" in paths[1].read_text()


def test_a_cold_item_run_with_a_sample_pool_never_scores_or_draws_a_cold_item(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make train-cl CL_PROTOCOL=cold-items` trains this recipe: the held-out items must stay unseen
    config = tiny_config(data, tmp_path / "cold", steps=4, valid_every=2, full_softmax=True, item_draws=6,
                         protocol="cold-items", cold_frac=0.3, lora_top_layers=1, sample_pool=16)
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    samples = TrainingSamples(ds, split, config.recent_targets, config.batch_size)
    cold_codes = {samples.code[item] for item in split.cold_items}
    real_draw, drawn = contrastive.draw_items, []

    def spy_draw(probs, warm_codes, draws, generator) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        assert float(probs[:, sorted(cold_codes)].sum()) == 0.0
        codes, weights = real_draw(probs, warm_codes, draws, generator)
        drawn.extend(codes.tolist())
        return codes, weights

    monkeypatch.setattr(contrastive, "draw_items", spy_draw)
    folder = train_contrastive(config)
    filled = torch.load(folder / "resume.pt", weights_only=True)["cache_filled"]
    assert cold_codes and drawn and not cold_codes & set(drawn)
    assert not filled[sorted(cold_codes)].any() and int(filled.sum()) == len(samples.warm_codes)
    from trainer.cl_report import write_training_report

    # named by the protocol, not by the split's description (which holds spaces and parentheses)
    report = write_training_report(folder, tmp_path / "report", "reasonrec train-cl --protocol cold-items (test)")[0]
    assert report.name == "ml-1m-zip-cold-items-training.json"


def test_a_cold_item_run_validates_on_warm_targets_only(data: Path) -> None:
    # the table of a cold-item run holds the training items alone: a cold validation target can never be ranked
    ds = load_dataset("ml-1m-zip", data)
    cold = make_split(ds, "cold-items", 0.3, 0)
    valid = validation_examples(cold)
    assert valid and len(valid) < len(cold.valid) and not {e.target.item_id for e in valid} & cold.cold_items
    loo = make_split(ds, "leave-one-out", 0.3, 0)
    assert validation_examples(loo) == loo.valid


def test_positives_are_the_target_and_the_items_that_follow_it_in_training(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    samples = TrainingSamples(ds, make_split(ds, "leave-one-out"), recent_targets=50, batch_size=4)
    user = samples.users[0]
    sequence = samples.sequences[user]
    codes = [samples.code[x.item_id] for x in sequence]
    middle, last = Example(user, sequence[:2], sequence[2]), Example(user, sequence[:-1], sequence[-1])
    assert samples.positives(middle, 3) == codes[2:5]
    assert samples.positives(middle, 1) == [codes[2]]
    assert samples.positives(last, 3) == [codes[-1]]  # nothing follows the last training item


def _two_steps_watching(data: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, watched: str, **settings: int
                        ) -> tuple[ContrastiveConfig, TrainingSamples, Path, list[list]]:
    """Two full-softmax steps of the tiny model with `settings`, recording the tensor arguments (cloned) of every
    call to `trainer.contrastive.<watched>`."""
    config = tiny_config(data, folder, steps=2, valid_every=2, full_softmax=True, item_draws=4, **settings)
    ds = load_dataset(config.dataset, config.data_path)
    samples = TrainingSamples(ds, make_split(ds, config.protocol), config.recent_targets, config.batch_size)
    real, calls = getattr(contrastive, watched), []

    def spy(*args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        calls.append([a.clone() for a in args if isinstance(a, torch.Tensor)])
        return real(*args, **kwargs)

    monkeypatch.setattr(contrastive, watched, spy)
    return config, samples, train_contrastive(config), calls


def test_each_positive_is_its_own_row_of_the_loss_with_its_users_vector(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, samples, folder, seen = _two_steps_watching(data, tmp_path / "positives", monkeypatch, "table_logits",
                                                        positives=3)
    examples = samples.batch(0, config.batch_size, config.seed)
    expected = [samples.positives(e, 3) for e in examples]
    users, codes, owned = seen[0]
    assert codes.tolist() == [c for user_codes in expected for c in user_codes]
    assert len(codes) > config.batch_size  # the cycle data gives most users items after their target
    first = 0
    for example, user_codes in zip(examples, expected, strict=True):
        rows = range(first, first + len(user_codes))
        assert all(torch.equal(users[r], users[first]) for r in rows)
        assert all(owned[r, user_codes].all() for r in rows)  # the other positives are never negatives
        first += len(user_codes)
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert "the next 2 items of the user's training sequence are positives" in meta["method"]


def test_more_than_one_positive_needs_a_full_softmax() -> None:
    with pytest.raises(ValueError, match="--positives"):
        ContrastiveConfig(positives=2)
    with pytest.raises(ValueError, match="--positives"):
        ContrastiveConfig(full_softmax=True, positives=0)


def test_stats_dropout_writes_a_training_item_without_its_rating_line_like_a_cold_item(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    samples = TrainingSamples(ds, make_split(ds, "leave-one-out"), recent_targets=50, batch_size=4)
    codes = torch.as_tensor(samples.warm_codes)
    full = [item_prompt(samples.items[samples.item_ids[int(c)]]) for c in codes]
    assert all("Average rating:" in prompt for prompt in full)
    assert samples.item_prompts(codes, 0.0, step=3, seed=0) == full
    dropped = samples.item_prompts(codes, 1.0, step=3, seed=0)
    for with_stats, without in zip(full, dropped, strict=True):
        kept = [line for line in with_stats.splitlines() if not line.startswith("Average rating:")]
        assert without.splitlines() == kept
    half = samples.item_prompts(codes, 0.5, step=3, seed=0)
    assert half == samples.item_prompts(codes, 0.5, step=3, seed=0)  # a pure function of seed and step: resumable
    assert set(half) & set(full) and set(half) & set(dropped)


def test_a_stats_dropout_run_trains_on_item_prompts_without_ratings(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(data, tmp_path / "dropout", steps=2, valid_every=2, full_softmax=True, item_draws=4,
                         stats_dropout=1.0)
    real_prompts, seen = TrainingSamples.item_prompts, []

    def spy_prompts(self, codes, stats_dropout, step, seed) -> list[str]:  # noqa: ANN001
        prompts = real_prompts(self, codes, stats_dropout, step, seed)
        seen.extend(prompts)
        return prompts

    monkeypatch.setattr(TrainingSamples, "item_prompts", spy_prompts)
    folder = train_contrastive(config)
    assert seen and not any("Average rating:" in prompt for prompt in seen)
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert "drops its rating line with probability 1.0" in meta["method"]


def test_stats_dropout_is_a_probability_for_a_trained_item_side() -> None:
    with pytest.raises(ValueError, match="--stats-dropout"):
        ContrastiveConfig(full_softmax=True, stats_dropout=1.5)
    with pytest.raises(ValueError, match="--stats-dropout"):
        ContrastiveConfig(frozen_items=True, stats_dropout=0.5)


def test_item_pairs_are_consecutive_items_of_a_training_sequence(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    samples = TrainingSamples(ds, make_split(ds, "leave-one-out"), recent_targets=50, batch_size=4)
    queries, nexts = samples.item_pairs(step=7, count=40, seed=0)
    assert len(queries) == len(nexts) == 40
    consecutive = {(samples.code[a.item_id], samples.code[b.item_id])
                   for seq in samples.sequences.values() for a, b in zip(seq, seq[1:])}
    assert set(zip(queries.tolist(), nexts.tolist(), strict=True)) <= consecutive
    again = samples.item_pairs(step=7, count=40, seed=0)
    assert torch.equal(again[0], queries) and torch.equal(again[1], nexts)
    assert [len(t) for t in samples.item_pairs(step=7, count=0, seed=0)] == [0, 0]


def test_each_item_pair_scores_its_items_fresh_vector_against_the_table(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, samples, folder, seen = _two_steps_watching(data, tmp_path / "pairs", monkeypatch, "full_softmax_loss",
                                                        item_pairs=5)
    assert len(seen) == config.steps
    queries, nexts = samples.item_pairs(0, 5, config.seed)
    items, codes, owned = seen[0]
    assert items.requires_grad and torch.equal(codes, nexts)
    assert torch.equal(owned, F.one_hot(queries, len(samples.item_ids)).bool())  # only the item itself is masked
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert "plus 5 (item, next item) pairs per step" in meta["method"]


def test_item_pairs_need_a_full_softmax() -> None:
    with pytest.raises(ValueError, match="--item-pairs"):
        ContrastiveConfig(item_pairs=8)
    with pytest.raises(ValueError, match="--item-pairs"):
        ContrastiveConfig(full_softmax=True, item_pairs=-1)
