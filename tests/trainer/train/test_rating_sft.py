"""Rating SFT (`reasonrec train-rating-sft`, RecOne's warm start) and the model's own rating report
(`reasonrec eval-llm-rating`) on the tiny model: the samples are training ratings after earlier training ratings,
the taught answer is what `/rate` serves and every claim in it is true, training lowers the loss of that answer and
writes an adapter the engines load, and the report's served row is the rating model's own error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import write_cycle_ml1m

from model.engines.loading import ADAPTER_META
from model.engines.transformers_engine import load_engine
from model.prompts import MAX_HISTORY_LINES, rating_prompt
from model.rating.checks import check_reasoning
from model.rating.factors import RatingModel
from model.rating.reasons import model_rating
from trainer.cli import main
from trainer.data import load_dataset
from trainer.data.rating_split import TEST, TRAIN, VALID, rating_split
from trainer.evaluation.llm_rating_eval import stated_rating
from trainer.train.rating_sft import RatingSftConfig, teacher_answer, train_rating_sft

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_ml1m(tmp_path_factory.mktemp("rating-sft") / "data", n_users=16)


def _position(split, user: int, item_id: str, value: float, part: int) -> int:  # noqa: ANN001
    rows = [r for r in np.flatnonzero(split.users == user) if split.parts[r] == part
            and split.item_ids[split.items[r]] == item_id and split.values[r] == value]
    assert rows
    return int(rows[0])


def test_examples_show_only_ratings_before_their_target(data: Path) -> None:
    ds = load_dataset("ml-1m-zip", data)
    split = rating_split(ds)
    catalog = split.catalog_before(ds.catalog, VALID)
    examples = split.training_examples(catalog, 10, 3, seed=0)
    assert len(examples) == 10 and examples == split.training_examples(catalog, 10, 3, seed=0)
    assert len({x.user for x in examples}) == 10
    for x in examples:
        target = _position(split, x.user, x.item.item_id, x.truth, TRAIN)
        shown = [r for r in np.flatnonzero(split.users == x.user) if split.parts[r] == TRAIN and r < target]
        assert 3 <= len(x.history.lines) <= MAX_HISTORY_LINES
        assert list(x.history.item_ids) == [split.item_ids[split.items[r]] for r in shown][-MAX_HISTORY_LINES:]
    tests = split.part_examples(split.catalog_before(ds.catalog, TEST), TEST, 5, seed=0)
    assert len(tests) == 5
    for x in tests:
        before = [split.item_ids[split.items[r]] for r in np.flatnonzero(split.users == x.user)
                  if split.parts[r] != TEST]
        assert list(x.history.item_ids) == before[-MAX_HISTORY_LINES:]


def test_the_taught_answer_is_what_rate_serves_and_every_claim_holds(data: Path, tmp_path: Path) -> None:
    config = RatingSftConfig(dataset="ml-1m-zip", data_path=data, model="tiny", rating_model=tmp_path / "rating")
    from trainer.train.rating import finished_or_trained

    teacher = finished_or_trained(config.teacher())
    ds = load_dataset("ml-1m-zip", data)
    split = rating_split(ds)
    catalog = split.catalog_before(ds.catalog, VALID)
    for x in split.training_examples(catalog, 8, 3, seed=1):
        text = teacher_answer(teacher, x, catalog)
        rating, served = model_rating(teacher, x.history, catalog, x.item, reasoning=True)
        assert text == served and text.endswith("</rate>")
        checks = check_reasoning(text, x.history, catalog, x.item, teacher.mean, rating)
        assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_training_lowers_the_loss_of_the_answer_and_the_engine_loads_it(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    config = RatingSftConfig(dataset="ml-1m-zip", data_path=data, model="tiny", samples=12, lr=5e-3, lora_r=4,
                             lora_top_layers=0, rating_model=tmp_path / "rating", out_dir=out)
    assert train_rating_sft(config, "reasonrec train-rating-sft ...") == out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["status"] == "done" and meta["steps"] == 12 and meta["job"] == "rating-sft"
    assert RatingModel.load(tmp_path / "rating").mean == pytest.approx(meta["teacher"]["mean"])
    # The first 4 steps see 4 users' answers once each; 4 passes later those answers cost less.
    assert np.mean(meta["losses"][-4:]) < np.mean(meta["losses"][:4])
    tuned, base = load_engine("tiny", out), load_engine("tiny")
    ds = load_dataset("ml-1m-zip", data)
    item = ds.catalog[ds.catalog.ids()[0]]
    prompt = [rating_prompt([], item)]
    assert not np.allclose(tuned.choice_probs(prompt, ["<rate>"], ["1", "2"]),
                           base.choice_probs(prompt, ["<rate>"], ["1", "2"]))


def test_a_stated_rating_is_read_from_the_match_sentence() -> None:
    assert stated_rating("<match>Predicted rating 3.87, above the user's average: a good match.</match>", 4) == 3.87
    assert stated_rating("<match>good</match>", 4) == 4.0


def test_the_report_rows_compare_the_model_with_the_served_rating(data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.train.rating import RatingTrainConfig, finished_or_trained

    served = finished_or_trained(RatingTrainConfig("ml-1m-zip", data, out_dir=tmp_path / "rating"))
    out = tmp_path / "docs"
    assert main(["eval-llm-rating", "--dataset", "ml-1m-zip", "--data-path", str(data), "--model", "tiny",
                 "--rating-model", str(tmp_path / "rating"), "--ratings", "6", "--max-tokens", "4",
                 "--tokens-per-tag", "2", "--out-dir", str(out), "--report-name", "tiny"]) == 0
    report = json.loads((out / "tiny.json").read_text())
    assert (out / "tiny.md").is_file() and "tiny.md" in capsys.readouterr().out
    ds = load_dataset("ml-1m-zip", data)
    split = rating_split(ds)
    catalog = split.catalog_before(ds.catalog, TEST)
    examples = split.part_examples(catalog, TEST, 6, seed=0)
    errors = [model_rating(served, x.history, catalog, x.item, reasoning=False)[0] - x.truth for x in examples]
    rows = {row["name"].split(" (")[0].split(",")[0]: row for row in report["rows"]}
    assert rows["served rating model"]["metrics"]["RMSE"]["mean"] == pytest.approx(np.sqrt(np.mean(np.square(errors))))
    guided = rows["LM guided four tags"]["metrics"]["RMSE"]["mean"]
    assert 0 <= guided <= 4 and report["gains"][0]["gain"]["mean"] == pytest.approx(
        rows["served rating model"]["metrics"]["RMSE"]["mean"] - guided)
    assert report["reasoning"][0].startswith("free answers in the four-tag format")
