"""Preference SFT of the model as the user (`reasonrec train-judge`) on the tiny model: the samples are the item
watched right after the cut against one never rated, the job writes an adapter the judge loads, resumes after an
interruption with the steps done kept, and is a no-op once done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trainer_helpers import write_cycle_ml1m

from model.engines.loading import ADAPTER_META, load_model
from model.engines.transformers_engine import TransformersEngine
from model.judge_pool import POOL_FILE, JudgePool
from model.preference import prefer_first
from model.prompts import HistoryLine
from trainer.cli import main
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.train.judge import JudgeSftConfig, judge_samples, pool_users, train_judge
from trainer.train.sft_loop import RESUME_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_cycle_ml1m(tmp_path / "data", n_users=12)


def test_a_sample_is_the_next_item_against_one_never_rated(data: Path) -> None:
    split = make_split(load_dataset("ml-1m-zip", data), "cold-items")
    samples = judge_samples(split, 50, 3, seed=0)
    assert samples == judge_samples(split, 50, 3, seed=0) and len(samples) == 50
    for s in samples:
        history = split.train[s.user]
        assert 3 <= s.cut < len(history) and history[s.cut].item_id == s.watched
        assert s.unrated not in {x.item_id for x in history}
    with pytest.raises(ValueError, match="min-history"):
        judge_samples(split, 1, 1000, seed=0)


def test_the_job_resumes_after_an_interruption_and_the_judge_loads_it(data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "judge"
    config = JudgeSftConfig(dataset="ml-1m-zip", data_path=data, model="tiny", pairs=4, min_history=3, lr=1e-2,
                            checkpoint_minutes=1e-9, out_dir=out)
    step = torch.optim.AdamW.step
    calls = {"n": 0}

    def failing_third(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_third)
    with pytest.raises(KeyboardInterrupt):
        train_judge(config)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    interrupted = json.loads((out / ADAPTER_META).read_text())
    assert interrupted["status"] == "training" and interrupted["steps"] == 2 and (out / RESUME_FILE).is_file()
    assert train_judge(config) == out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 4 and meta["losses"][:2] == interrupted["losses"]
    assert not (out / RESUME_FILE).exists()
    mtime = (out / ADAPTER_META).stat().st_mtime_ns
    train_judge(config)  # done: a no-op
    assert (out / ADAPTER_META).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings"):
        train_judge(JudgeSftConfig(**{**config.__dict__, "lr": 2e-2}))

    loaded = load_model("tiny", out)
    assert loaded.fingerprint.adapter_hash
    judge, base = TransformersEngine(loaded), TransformersEngine(load_model("tiny"))
    dataset = load_dataset("ml-1m-zip", data)
    items = [dataset.catalog[i] for i in dataset.catalog.ids()[:3]]
    history = [HistoryLine.of_item(items[0], 5, None)]
    pairs = [(items[1], items[2])]
    assert abs(float(prefer_first(judge, history, pairs)[0]) - float(prefer_first(base, history, pairs)[0])) > 1e-6


def test_the_command_line_trains_a_judge(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-judge"
    assert main(["train-judge", "--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny", "--pairs", "2",
                 "--min-history", "3", "--pool-users", "5", "--out-dir", str(out)]) == 0
    assert "--judge-adapter" in capsys.readouterr().out and (out / "adapter_model.safetensors").is_file()
    pool = JudgePool.load(out / POOL_FILE)  # whom the served judge answers as: training users and their histories
    split = make_split(load_dataset("ml-1m-zip", data), "cold-items")
    assert [u.user_id for u in pool.users] == pool_users(split, 5, 0) and pool.source["split"].startswith("cold-items")
    for user in pool.users:
        assert list(user.history) == [(x.item_id, x.rating, x.timestamp) for x in split.train[user.user_id]][-50:]
    (out / POOL_FILE).unlink()
    assert main(["train-judge", "--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny", "--pairs", "2",
                 "--min-history", "3", "--pool-users", "5", "--out-dir", str(out)]) == 0
    assert JudgePool.load(out / POOL_FILE) == pool  # a done judge without its pool gets it written
