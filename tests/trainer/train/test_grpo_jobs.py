"""The GRPO jobs on the tiny model (`trainer.train.grpo`): RecPO (`reasonrec train-recpo`) and rating GRPO
(`reasonrec train-rating-grpo`) run a few TRL steps, compute their rewards, write a loadable adapter with its
curves, resume from their checkpoints and are a no-op once done; the rewards score what they say they score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import write_cycle_ml1m

from indexer.core.catalog import Item
from model.engines.loading import ADAPTER_META, load_model
from model.rankers.conclusion import ConclusionTerm
from trainer.cli import main
from trainer.config_args import load_recipe
from trainer.train.grpo.rating import Accuracy, Format, RatingGrpoConfig, train_rating_grpo
from trainer.train.grpo.recpo import PROBE_TERM, Marker, RecpoConfig, ServedRank, marker_stop, train_recpo
from trainer.train.lora import save_adapter
from trainer.train.reasoning_sft import ReasoningSftConfig, seeded_lora
from trainer.train.sasrec import SasrecTrainConfig, train_sasrec

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.usefixtures("one_torch_thread")]




@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small ML-1M-layout dataset, its SASRec+ and a (fresh) tiny reasoning adapter."""
    root = tmp_path_factory.mktemp("grpo")
    data = write_cycle_ml1m(root / "data", n_users=16)
    train_sasrec(SasrecTrainConfig(dataset="ml-1m-zip", data_path=data, max_len=8, hidden=8, blocks=1, max_epochs=1,
                                   patience=1, out_dir=root / "sasrec"))
    loaded = load_model("tiny")
    model = seeded_lora(loaded.model, ReasoningSftConfig(model="tiny", lora_r=4, lora_top_layers=0))
    save_adapter(model, root / "sft", loaded.fingerprint.model_id)
    return {"data": data, "sasrec": root / "sasrec", "sft": root / "sft"}


def _small(**extra: object) -> dict[str, object]:
    return {**dict(dataset="ml-1m-zip", model="tiny", users=4, group=2, prompts_per_step=2, max_tokens=6,
                   checkpoint_steps=1, lr=1e-3), **extra}


def test_recpo_trains_saves_resumes_and_is_done(setup, tmp_path, caplog):
    out = tmp_path / "recpo"
    settings = _small(data_path=setup["data"], adapter=setup["sft"], sasrec_checkpoint=setup["sasrec"],
                      min_lines=3, out_dir=out)
    assert train_recpo(RecpoConfig(**settings, steps=2)) == out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 2 and meta["job"] == "recpo"
    assert meta["reward_term"]["source"].startswith("probe") and meta["base_model"]["model_id"] == "tiny-llama"
    rewards = [c for c in meta["curves"] if "reward" in c]
    assert len(rewards) == 2 and all(np.isfinite(c["reward"]) for c in rewards)
    assert any("rewards/ServedRank/mean" in c for c in rewards)
    assert not (out / "ref").exists() and (out / "adapter_model.safetensors").is_file()
    assert load_model("tiny", reasoning_adapter=out).reasoning_adapter
    stamp = (out / ADAPTER_META).stat().st_mtime_ns
    train_recpo(RecpoConfig(**settings, steps=2))  # done: a no-op
    assert (out / ADAPTER_META).stat().st_mtime_ns == stamp
    with caplog.at_level("INFO", logger="trainer.train.grpo.run"):
        train_recpo(RecpoConfig(**settings, steps=3))  # resumes from checkpoint-2
    assert "checkpoint-2" in caplog.text
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["steps"] == 3 and [c for c in meta["curves"] if "reward" in c][:2] == rewards
    with pytest.raises(ValueError, match="other settings"):
        train_recpo(RecpoConfig(**{**settings, "lr": 2e-3}, steps=3))


def test_generation_stops_at_the_marker():
    tokenizer = load_model("tiny").tokenizer
    stop = marker_stop(tokenizer)
    assert tokenizer("Next: likely a 1990s Drama.<answer>", add_special_tokens=False)["input_ids"][-1] == stop
    assert tokenizer.decode([stop]).endswith(">")


def test_gpu_recipes_load():
    repo = Path(__file__).resolve().parents[3]
    recipes = repo / "trainer" / "recipes"
    recpo = RecpoConfig(**load_recipe(recipes / "recpo-gpu.toml", RecpoConfig),
                        adapter=repo / "deploy" / "artifacts" / "ml-100k" / "reasoning")
    rating = RatingGrpoConfig(**load_recipe(recipes / "rating-grpo-gpu.toml", RatingGrpoConfig))
    assert recpo.mixed_precision == rating.mixed_precision == "bf16" and recpo.steps == rating.steps == 120


def test_recpo_needs_the_sft_adapter():
    with pytest.raises(ValueError, match="--adapter"):
        RecpoConfig(dataset="ml-100k", model="tiny")


def _item(item_id: str, genre: str, year: int) -> Item:
    return Item(item_id, f"Film {item_id}", (genre,), year)


def test_served_rank_rewards_the_conclusion_that_names_the_target():
    items = [_item("a", "Drama", 1985), _item("b", "Comedy", 1975), _item("c", "Comedy", 1995)]
    scores = np.array([[2.0, 1.0, 0.5]])  # s(history) puts the target (column 2) last
    reward = ServedRank(scores, np.array([2]), items, ConclusionTerm(1.0, 1.0), {"drama": "Drama", "comedy": "Comedy"})
    right, wrong = reward(["Next: likely a 1990s Comedy<answer>", "Next: likely a 1990s Drama<answer>"], [0, 0])
    assert right == pytest.approx(0.95 + 0.05 * np.exp(2.5) / (np.exp(2.5) + 2 * np.exp(2.0)))
    assert wrong == pytest.approx(0.95 / np.log2(3) + 0.05 * np.exp(1.5) / np.exp([3.0, 1.0, 1.5]).sum())
    assert Marker()(["Mostly Drama<answer>", "Mostly Drama"]) == [1.0, 0.0]
    assert PROBE_TERM.genre > 0


def test_rating_rewards_follow_reczero():
    good = "<analyze user>likes drama</analyze user><analyze item>a drama</analyze item><match>good</match>" \
           "<rate>4</rate>"
    bad = "<analyze user>likes drama</analyze user><rate>4</rate>"
    assert Format()([good, bad]) == [1.0, -1.0]
    assert Accuracy(np.array([5.0]))([good, bad], [0, 0]) == [0.5, 0.0]


def test_rating_grpo_trains_and_resumes(setup, tmp_path):
    out = tmp_path / "rating-grpo"
    settings = _small(data_path=setup["data"], max_tokens=8, out_dir=out)
    assert train_rating_grpo(RatingGrpoConfig(**settings, steps=1)) == out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 1 and meta["job"] == "rating-grpo"
    assert any("rewards/Format/mean" in c for c in meta["curves"])
    train_rating_grpo(RatingGrpoConfig(**settings, steps=2))
    assert json.loads((out / ADAPTER_META).read_text())["steps"] == 2


def test_cli_runs_recpo(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["train-recpo", "--dataset", "ml-1m-zip", "--data-path", str(setup["data"]), "--model", "tiny",
                 "--adapter", str(setup["sft"]), "--sasrec-checkpoint", str(setup["sasrec"]), "--users", "2",
                 "--group", "2", "--prompts-per-step", "1", "--max-tokens", "4", "--steps", "1", "--min-lines", "3",
                 "--out-dir", str(out), "--threads", "1"])
    assert code == 0 and "reward" in capsys.readouterr().out and (out / ADAPTER_META).is_file()


def test_gpu_recipe_runs_on_a_cpu_stand_in(setup, tmp_path):
    """The GPU machine's command (trainer/recipes/gpu-recpo.sh with its GPU recipe) on the tiny model, a few flags
    making it small: every stage runs, the adapter lands in OUT/recpo."""
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "MODEL": "tiny",
           "DATASET": "ml-1m-zip", "DATA_PATH": str(setup["data"]), "SFT_ADAPTER": str(setup["sft"]),
           "SASREC": str(setup["sasrec"]), "RECPO_DIR": str(tmp_path / "recpo"), "OUT": str(tmp_path / "out"),
           "WHEELS": str(tmp_path / "no-wheels"),
           "RECPO_ARGS": "--steps 1 --users 2 --prompts-per-step 1 --group 2 --max-tokens 4 --min-lines 3 "
                         "--mixed-precision no"}
    done = subprocess.run(["bash", "trainer/recipes/gpu-recpo.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trl 1.16.0" in done.stdout and f"{tmp_path / 'out'}/recpo" in done.stdout
    meta = json.loads((tmp_path / "out" / "recpo" / ADAPTER_META).read_text())
    assert meta["steps"] == 1 and meta["config"]["users"] == 2 and meta["config"]["lr"] == 1e-5  # the recipe's
    bad = subprocess.run(["bash", "trainer/recipes/gpu-recpo.sh", "nothing"], cwd=repo, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    missing = subprocess.run(["bash", "trainer/recipes/gpu-recpo.sh", "deps"], cwd=repo, capture_output=True,
                             text=True, env={**env, "MODEL": str(tmp_path / "no-model")}, timeout=120)
    assert missing.returncode == 3 and "no model" in missing.stderr
