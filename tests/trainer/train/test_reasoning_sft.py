"""Reasoning SFT (`trainer.train.reasoning_sft`, `trainer.reasoning.packing`): packed teacher forcing equals
separate passes, the tiny model learns to write a rationale and `<answer>` itself, and the job writes a loadable,
resumable adapter."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from trainer_helpers import write_cycle_ml1m

from model.engines.loading import ADAPTER_META, LoadedModel, load_model
from model.engines.transformers_engine import TransformersEngine
from model.prompts import ANSWER_MARKER, HistoryLine, render_chat, user_prompt
from trainer.cli import main
from trainer.config_args import load_recipe
from trainer.reasoning.packing import WindowSample, pack_window, packed_loss, packed_states
from trainer.train.reasoning_sft import ReasoningSftConfig, seeded_lora, train_packed, train_reasoning

RATIONALE = "Mostly Drama. Next: likely a 1990s Western."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _window(offset: int, n: int = 6) -> tuple[HistoryLine, ...]:
    return tuple(HistoryLine(f"Movie {offset + i} ({1980 + i})", float(i % 5 + 1), 951_868_800 + i * 3_456_000)
                 for i in range(n))


def _full_pass_loss(model: torch.nn.Module, tokenizer, lines, text: str) -> tuple[float, int]:
    head = render_chat(tokenizer, user_prompt(lines))
    ids = tokenizer(head + text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    logits = model(input_ids=ids).logits[0]
    return F.cross_entropy(logits[start - 1 : -1], ids[0, start:], reduction="sum").item(), ids.shape[1] - start


def test_packed_loss_equals_separate_full_passes():
    loaded = load_model("tiny")
    tokenizer, model = loaded.tokenizer, loaded.model
    samples = [WindowSample(_window(0, 12), (3, 7, 12), ("Mostly Drama (60%).<answer>", 'Loved "Movie 2".<answer>',
                                                         "x<answer>")),
               WindowSample(_window(40, 5), (5,), ("Next: likely a 1990s Drama.<answer>",))]
    rows = [pack_window(tokenizer, s) for s in samples]
    assert [len(r.tails) for r in rows] == [3, 1] and not any(r.skipped for r in rows)
    separate = sum(len(tokenizer(render_chat(tokenizer, user_prompt(s.lines[:k]), t))["input_ids"])
                   for s in samples for k, t in zip(s.cuts, s.texts, strict=True))
    assert sum(len(r.ids) for r in rows) < 0.7 * separate  # the window is fed once, not once per cut
    with torch.no_grad():
        packed, tokens = packed_loss(model, rows, tokenizer.pad_token_id)
        parts = [_full_pass_loss(model, tokenizer, s.lines[:k], t) for s in samples for k, t in zip(s.cuts, s.texts,
                                                                                                     strict=True)]
    assert tokens == sum(n for _, n in parts)
    assert packed.item() == pytest.approx(sum(loss for loss, _ in parts) / tokens, rel=1e-5)


def test_packed_states_equal_the_states_after_each_whole_chat():
    loaded = load_model("tiny")
    texts = ("Mostly Drama.<answer>", 'Loved "Movie 2". Next: likely a 1980s Drama.<answer>', "x<answer>")
    sample = WindowSample(_window(0, 12), (3, 7, 12), texts)
    row = pack_window(loaded.tokenizer, sample)
    assert row.packed_cuts == (0, 1, 2)
    states = packed_states(loaded.model, row, loaded.tokenizer.pad_token_id)
    full = TransformersEngine(loaded).assistant_states([user_prompt(sample.lines[:k]) for k in sample.cuts], texts)
    assert states.shape == full.shape and states == pytest.approx(full, abs=1e-4)


@pytest.mark.slow
def test_packing_is_exact_with_smollm2():
    """SmolLM2's chat template and tokenizer split every cut at the window boundary; packed = separate passes."""
    loaded = load_model("smollm2")
    lines = tuple(HistoryLine(title, rating, 975_000_000 + i * 86_400) for i, (title, rating) in enumerate(
        [("Fargo (1996)", 5.0), ("Heat (1995)", 4.0), ("Shawshank Redemption, The (1994)", 5.0), ("Alien (1979)", 3.0),
         ("Toy Story (1995)", 4.0), ("L.A. Confidential (1997)", 5.0)]))
    texts = ('Mostly Drama (50%). Loved "Fargo". Next: likely a 1990s Crime.<answer>',
             "Top genre: Thriller 40%. Rates above average (4.2 vs 3.6). So expect a Drama next.<answer>")
    sample = WindowSample(lines, (3, 6), texts)
    row = pack_window(loaded.tokenizer, sample)
    assert row.skipped == 0 and len(row.tails) == 2
    with torch.no_grad():
        packed, tokens = packed_loss(loaded.model, [row], loaded.tokenizer.pad_token_id)
        parts = [_full_pass_loss(loaded.model, loaded.tokenizer, lines[:k], t) for k, t in zip((3, 6), texts,
                                                                                              strict=True)]
    assert tokens == sum(n for _, n in parts)
    assert packed.item() == pytest.approx(sum(loss for loss, _ in parts) / tokens, rel=1e-4)


def test_tiny_model_learns_to_write_the_rationale_and_the_marker():
    loaded = load_model("tiny")
    tokenizer = loaded.tokenizer
    windows = [_window(7 * j) for j in range(3)]
    prompts = [user_prompt(w[:5]) for w in windows]
    before = TransformersEngine(loaded).reason(prompts, 48)
    assert not any(r.wrote_marker for r in before)
    rows = [pack_window(tokenizer, WindowSample(w, (4, 6), (RATIONALE + ANSWER_MARKER,) * 2)) for w in windows]
    model = seeded_lora(loaded.model, ReasoningSftConfig(model="tiny", lora_top_layers=0, seed=0))
    losses = train_packed(model, rows, steps=80, lr=1e-2, pad_id=tokenizer.pad_token_id, rows_per_step=3)
    assert losses[-1] < losses[0] - 1.0
    after = TransformersEngine(LoadedModel(model.get_base_model(), tokenizer, loaded.fingerprint)).reason(prompts, 48)
    assert [(r.text, r.wrote_marker) for r in after] == [(RATIONALE, True)] * 3


def test_job_writes_a_loadable_resumable_adapter(tmp_path):
    data = write_cycle_ml1m(tmp_path / "data", n_users=12)
    out = tmp_path / "adapter"
    settings = dict(dataset="ml-1m-zip", data_path=data, model="tiny", windows=4, cuts=3, min_lines=3,
                    windows_per_step=2, check_users=2, check_tokens=8, lr=1e-3, out_dir=out)
    assert train_reasoning(ReasoningSftConfig(**settings, epochs=1)) == out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 2 and meta["pool"]["samples"] >= 4
    assert meta["base_model"]["model_id"] == "tiny-llama" and meta["template_version"]
    assert meta["final_check"]["users"] == 2 and meta["split"]["protocol"] == "leave-one-out"
    loaded = load_model("tiny", out)
    assert loaded.fingerprint.adapter_hash and loaded.fingerprint.model_id == "tiny-llama"
    mtime, first_losses = (out / ADAPTER_META).stat().st_mtime_ns, meta["losses"]
    train_reasoning(ReasoningSftConfig(**settings, epochs=1))  # done: a no-op
    assert (out / ADAPTER_META).stat().st_mtime_ns == mtime
    train_reasoning(ReasoningSftConfig(**settings, epochs=2))  # continues from resume.pt
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["steps"] == 4 and meta["losses"][:2] == first_losses and len(meta["losses"]) == 4
    with pytest.raises(ValueError, match="other settings"):
        train_reasoning(ReasoningSftConfig(**{**settings, "lr": 2e-3}, epochs=2))


def test_cpu_recipe_is_the_default_and_the_gpu_recipe_loads():
    recipes = Path(__file__).parents[3] / "trainer" / "recipes"
    cpu = load_recipe(recipes / "reasoning-cpu.toml", ReasoningSftConfig)
    defaults = ReasoningSftConfig()
    assert {f.name for f in fields(ReasoningSftConfig)} - set(cpu) == {
        "dataset", "data_path", "protocol", "cold_frac", "split_seed", "out_dir"}
    assert all(getattr(defaults, k) == (tuple(v) if isinstance(v, list) else v) for k, v in cpu.items())
    gpu = ReasoningSftConfig(**load_recipe(recipes / "reasoning-gpu.toml", ReasoningSftConfig))
    assert gpu.mixed_precision == "bf16" and gpu.lora_top_layers == 0 and gpu.steps == 250


def test_cli_trains_and_evaluates_reasoning(tmp_path, capsys):
    data = write_cycle_ml1m(tmp_path / "data", n_users=12)
    common = ["--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny", "--threads", "1"]
    adapter = tmp_path / "adapter"
    assert main(["train-reasoning", *common, "--windows", "2", "--cuts", "2", "--min-lines", "3", "--epochs", "1",
                 "--check-users", "0", "--lora-modules", "q_proj,v_proj", "--out-dir", str(adapter)]) == 0
    assert json.loads((adapter / ADAPTER_META).read_text())["config"]["lora_modules"] == ["q_proj", "v_proj"]
    assert main(["eval-reasoning", *common, "--adapter", str(adapter), "--users", "3", "--llm-users", "5",
                 "--reasoning-tokens", "6", "--latency-users", "1", "--out-dir", str(tmp_path / "reports")]) == 0
    report = json.loads((tmp_path / "reports" / "ml-1m-zip-reasoning.json").read_text())
    assert report["metrics"]["users"] == 3 and report["metrics"]["single_requests"] == 1
    assert report["adapter_meta"]["status"] == "done" and report["model"]["adapter_hash"]
    assert report["command"].startswith("reasonrec ") and "wrote" in capsys.readouterr().out
