"""`reasonrec experiment grpo-curve`: the rise of a run's reward between its first and last steps, with an interval
that separates a rising reward from a flat noisy one, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.engines.loading import ADAPTER_META
from trainer.cli import build_parser
from trainer.config_args import config_from_args
from trainer.train.grpo.curves import GrpoCurveConfig, grpo_curve, rise, step_rewards


def _curves(rewards: np.ndarray) -> list[dict]:
    logged = [{"step": i + 1, "reward": float(r), "rewards/ServedRank/mean": float(r) * 0.9, "loss": 0.0}
              for i, r in enumerate(rewards)]
    return logged + [{"train_runtime": 12.0, "step": len(rewards)}]  # TRL's closing entry has no reward


def test_a_rising_reward_rises_beyond_its_noise_and_a_flat_one_does_not() -> None:
    rng = np.random.default_rng(0)
    flat = rng.normal(0.3, 0.05, 40)
    rising = flat + np.linspace(0, 0.2, 40)
    up, level = rise(rising, 10, 2000), rise(flat, 10, 2000)
    assert up["ci95"][0] > 0 and up["rise"] == pytest.approx(rising[-10:].mean() - rising[:10].mean())
    assert level["ci95"][0] < 0 < level["ci95"][1]
    with pytest.raises(ValueError, match="fewer than two windows"):
        rise(flat[:15], 10, 100)


def test_the_reward_series_are_read_per_step() -> None:
    series = step_rewards(_curves(np.array([0.1, 0.2, 0.3])))
    assert list(series) == ["reward", "rewards/ServedRank/mean"]
    np.testing.assert_allclose(series["rewards/ServedRank/mean"], [0.09, 0.18, 0.27])


def test_the_command_writes_the_report(tmp_path: Path) -> None:
    adapter = tmp_path / "run"
    adapter.mkdir()
    manifest = {"status": "done", "job": "recpo", "data": {"dataset": "ml-100k"}, "config": {"steps": 24},
                "machine": "test", "date": "now", "curves": _curves(np.linspace(0.2, 0.4, 24))}
    (adapter / ADAPTER_META).write_text(json.dumps(manifest))
    args = build_parser().parse_args(["experiment", "grpo-curve", "--adapter", str(adapter), "--out-dir",
                                      str(tmp_path / "out"), "--window", "6"])
    paths = grpo_curve(config_from_args(GrpoCurveConfig, args), "reasonrec experiment grpo-curve")
    assert [p.name for p in paths] == ["run-curve.md", "run-curve.json", "run-curve.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    report = json.loads(paths[1].read_text())
    assert report["steps"] == 24 and report["rise"]["reward"]["rise"] > 0
    assert "| reward |" in paths[0].read_text()
    (adapter / ADAPTER_META).write_text(json.dumps({"status": "done"}))
    with pytest.raises(ValueError, match="no training curves"):
        grpo_curve(GrpoCurveConfig(adapter=adapter, out_dir=tmp_path / "out"))
