"""The full-softmax loss (`trainer.train.contrastive.loss`): the table's logits against a hand computation with
every mask, the importance-weighted item draws as an unbiased estimate of the softmax's push, the item-side term
carrying exactly the full softmax's gradient to fresh item vectors; and the training job on the tiny model scoring
users against a table that no step overwrites, with cold items never scored or drawn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cl_helpers import table_of, tiny_config, unit
from torch.nn import functional as F
from trainer_helpers import write_cycle_ml1m

import trainer.train.contrastive.job as contrastive
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.train.contrastive.job import ADAPTER_META, train_contrastive, validation_examples
from trainer.train.contrastive.loss import ItemTable, draw_items, history_mask, item_side_term, table_logits
from trainer.train.contrastive.samples import TrainingSamples


def manual_ce(logits: list[float], positive: int) -> float:
    return -(logits[positive] - math.log(sum(math.exp(x) for x in logits)))


def test_the_table_logits_match_a_hand_computation_with_masks() -> None:
    rows = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]]
    table = table_of(rows)
    table.filled[4] = False  # an unfilled row (a cold item) is never a negative
    users = torch.tensor([[1.0, 1.0], [1.0, -1.0]], requires_grad=True)
    codes = torch.tensor([0, 3])
    owned = history_mask([[0, 1], [3]], 5)  # user 0 owns item 1 besides its target 0; the target row stays
    tau = 0.5
    logits = table_logits(users, codes, table, owned, tau)
    assert torch.isneginf(logits[0, [1, 4]]).all() and torch.isneginf(logits[1, 4])
    loss = F.cross_entropy(logits, codes)
    u, v = unit(users.tolist()), unit(rows)
    expected = []
    for b, allowed in ((0, [0, 2, 3]), (1, [0, 1, 2, 3])):
        row = [float(u[b] @ v[j]) / tau for j in allowed]
        expected.append(manual_ce(row, allowed.index(int(codes[b]))))
    assert loss.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)
    loss.backward()
    assert users.grad is not None and users.grad.abs().sum() > 0 and not table.units.requires_grad


def test_the_table_centers_users_as_its_rows() -> None:
    table = ItemTable.empty(2, torch.tensor([0.1, -0.2]))
    table.update(torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    users = torch.tensor([[0.8, 0.1]])
    logits = table_logits(users, torch.tensor([0]), table, history_mask([[]], 2), 1.0)
    centered = F.normalize(users - table.center, dim=-1) @ table.units.T
    torch.testing.assert_close(logits, centered)


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
    table = ItemTable.empty(6, raw_items.mean(dim=0))
    table.update(torch.arange(6), raw_items)
    users = torch.randn(2, 3, requires_grad=True)
    codes, owned, tau = torch.tensor([1, 4]), history_mask([[0, 1], [4]], 6), 0.2
    logits = table_logits(users, codes, table, owned, tau)
    probs = logits.detach().softmax(dim=-1)
    fresh = raw_items.clone().requires_grad_(True)  # every item's vector, passed fresh: the estimate is exact
    term = item_side_term(users, fresh[codes], fresh, probs, table, tau)
    assert term.item() == 0.0
    term.backward()
    # reference: the same cross-entropy with the table's rows differentiable
    reference_items = raw_items.clone().requires_grad_(True)
    u = table.unit(users.detach())
    reference = u @ table.unit(reference_items).T / tau
    mask = owned.clone()
    mask[torch.arange(2), codes] = False
    F.cross_entropy(reference.masked_fill(mask, float("-inf")), codes).backward()
    torch.testing.assert_close(fresh.grad, reference_items.grad)
    assert users.grad is None  # users learn from the table's logits, not from this term


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("full") / "data")


def test_a_run_trains_items_against_a_table_only_validation_rewrites(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(data, tmp_path / "full", steps=6, valid_every=3, item_draws=5)
    ds = load_dataset(config.dataset, config.data_path)
    samples = TrainingSamples(ds, make_split(ds, config.protocol), config.recent_targets)
    real_term = contrastive.item_side_term
    seen: list[dict] = []

    def spy_term(users, targets, drawn, weights, table, temperature) -> torch.Tensor:  # noqa: ANN001
        seen.append({"units": table.units.clone(), "targets": len(targets), "drawn": len(drawn),
                     "trainable": targets.requires_grad and drawn.requires_grad})
        return real_term(users, targets, drawn, weights, table, temperature)

    monkeypatch.setattr(contrastive, "item_side_term", spy_term)
    folder = train_contrastive(config)
    assert len(seen) == 6 and all(s["trainable"] and s["targets"] == 8 and 1 <= s["drawn"] <= 5 for s in seen)
    # steps 1-3 see the table of step 0, steps 4-6 the one re-encoded at the validation after step 3
    assert all(torch.equal(seen[i]["units"], seen[0]["units"]) for i in (1, 2))
    assert all(torch.equal(seen[i]["units"], seen[3]["units"]) for i in (4, 5))
    assert not torch.equal(seen[3]["units"], seen[0]["units"])
    meta = json.loads((folder / ADAPTER_META).read_text())
    assert [p["step"] for p in meta["curve"]] == [0, 3, 6]
    assert "full softmax over every item's vector" in meta["method"] and "5 items drawn" in meta["method"]
    assert len(samples.warm_codes) == int(torch.load(folder / "resume.pt", weights_only=True)["table_filled"].sum())
    from trainer.train.contrastive.report import write_training_report

    paths = write_training_report(folder, tmp_path / "report", "reasonrec train-cl (test)", "full-run")
    assert [p.name for p in paths] == ["full-run.json", "full-run.md", "full-run.png"]
    assert "5 items drawn per step from the batch's softmax" in paths[1].read_text()


def test_a_cold_item_run_with_a_sample_pool_never_scores_or_draws_a_cold_item(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make train-cl CL_PROTOCOL=cold-items` trains this recipe: the held-out items must stay unseen
    config = tiny_config(data, tmp_path / "cold", steps=4, valid_every=2, item_draws=6,
                         protocol="cold-items", cold_frac=0.3, lora_top_layers=1, sample_pool=16)
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    samples = TrainingSamples(ds, split, config.recent_targets)
    cold_codes = {samples.code[item] for item in split.cold_items}
    real_draw, drawn = contrastive.draw_items, []

    def spy_draw(probs, warm_codes, draws, generator) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        assert float(probs[:, sorted(cold_codes)].sum()) == 0.0
        codes, weights = real_draw(probs, warm_codes, draws, generator)
        drawn.extend(codes.tolist())
        return codes, weights

    monkeypatch.setattr(contrastive, "draw_items", spy_draw)
    folder = train_contrastive(config)
    filled = torch.load(folder / "resume.pt", weights_only=True)["table_filled"]
    assert cold_codes and drawn and not cold_codes & set(drawn)
    assert not filled[sorted(cold_codes)].any() and int(filled.sum()) == len(samples.warm_codes)
    from trainer.train.contrastive.report import write_training_report

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
