"""The rationale generator writes only what is true, the checker reads it back and rejects what is false
(`trainer.reasoning`)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

import numpy as np
import pytest

from indexer.core.catalog import Catalog, Item
from model.claims import (
    TEMPLATES,
    DecadeLead,
    GenreLead,
    Prediction,
    RatingLead,
    RecentGenre,
    parse,
    prediction_matches,
    split_sentences,
)
from model.engines.base import Reasoning
from model.prompts import ANSWER_MARKER
from model.rankers.llm import LlmRanker
from trainer.data import load_dataset
from trainer.data.splits import Example, leave_one_out
from trainer.evaluation.reasoning_report import write_reasoning_report
from trainer.protocol.harness import user_history
from trainer.reasoning.checker import check_text, claim_holds
from trainer.reasoning.facts import Entry, HistoryFacts, ReasoningContext
from trainer.reasoning.rationales import (
    MAX_RATIONALE_TOKENS,
    example_facts,
    rationale_for,
    teacher_forced_text,
    token_counter,
    write_rationale,
)
from trainer.reasoning.scoring import score_reasonings


def _item(i: int, genres: tuple[str, ...], year: int, title: str | None = None) -> Item:
    return Item(str(i), title or f"Film {i}", genres, year)


@pytest.fixture(scope="module")
def facts() -> HistoryFacts:
    """12 entries: 8 Drama (1990s), then 4 Comedy (1970s); Shawshank and Film 11 rated 5, the rest 3."""
    entries = [Entry(_item(i, ("Drama",), 1990 + i), 3.0) for i in range(8)]
    entries[2] = Entry(_item(2, ("Drama", "Crime"), 1994, "Shawshank Redemption, The"), 5.0)
    entries += [Entry(_item(8 + i, ("Comedy",), 1972), 5.0 if i == 3 else 3.0) for i in range(4)]
    return HistoryFacts.of(entries)


@pytest.fixture(scope="module")
def ml1m() -> tuple[ReasoningContext, list[Example]]:
    ds = load_dataset("ml-1m")
    split = leave_one_out(ds)
    context = ReasoningContext(ds.catalog)
    rng = random.Random(1)
    examples = []
    for user in rng.sample(sorted(split.train), 400):
        seq = split.train[user]
        if len(seq) > 1:
            t = rng.randrange(1, len(seq))
            examples.append(Example(user, seq[:t], seq[t]))
    return context, examples


def test_facts_of_a_known_history(facts):
    assert facts.top_genres == ["Drama", "Comedy", "Crime"] and facts.genre_share("Drama") == pytest.approx(8 / 12)
    assert facts.top_decades == [1990, 1970]
    assert facts.top_ratings == [3.0]  # ten 3s, two 5s
    assert facts.recent_genres == ["Comedy"]  # 4 Comedy + 1 Drama among the last 5, 7 entries before them


def test_recent_genres_need_earlier_entries():
    entries = [Entry(_item(i, ("Drama",), 1990), 3.0) for i in range(9)]
    assert HistoryFacts.of(entries).recent_genres == []
    assert HistoryFacts.of(entries + entries[:1]).recent_genres == ["Drama"]


@pytest.mark.parametrize("claim, holds", [
    (GenreLead("Drama"), True), (GenreLead("Crime"), True), (GenreLead("Western"), False),
    (DecadeLead(1990), True), (DecadeLead(1970), True), (DecadeLead(1980), False),
    (RatingLead(3.0), True), (RatingLead(5.0), False), (RatingLead(4.0), False),
    (RecentGenre("Comedy"), True), (RecentGenre("Drama"), False),
])
def test_checker_verdicts(facts, claim, holds):
    assert claim_holds(claim, facts) is holds


def test_false_text_fails_and_true_text_passes(facts):
    true_text = "Mostly Drama and Comedy. Usually rates 3. Lately Comedy. Next: likely a 1970s Comedy."
    check = check_text(true_text, facts)
    assert check.faithful and check.claims == 4 and check.parsed.prediction == Prediction("Comedy", 1970)
    false_text = 'Mostly Western. Most ratings: 4. Lately Drama; Loved "Film 3". And more.'
    check = check_text(false_text, facts)
    assert check.verdicts == (False, False, False) and check.parsed.unparsed == ('Loved "Film 3"', "And more")
    assert not check.faithful


def test_every_template_reads_back_as_its_own_kind():
    values = {"genres": {"g0": "Drama", "g1": "Film-Noir"}, "decades": {"d0": 1990, "d1": 1970},
              "rating": {"r0": 4, "r1": 4.5}, "recent": {"g0": "Sci-Fi"},
              "prediction": {"g0": "Action", "d0": 1980}}
    expected = {"genres": (GenreLead("Drama"), GenreLead("Film-Noir")), "decades": (DecadeLead(1990), DecadeLead(1970)),
                "rating": (RatingLead(4.0), RatingLead(4.5)), "recent": (RecentGenre("Sci-Fi"),)}
    for kind, templates in TEMPLATES.items():
        for template in templates:
            slots = set(re.findall(r"\{(\w+)\}", template)) - {"art"}
            text = template.format(**{k: v for k, v in values[kind].items() if k in slots}, art="an")
            parsed = parse(text)
            assert not parsed.unparsed, text
            if kind == "prediction":
                assert parsed.prediction.genre == "Action", text
            else:
                assert set(parsed.claims) <= set(expected[kind]) and parsed.claims, text


def test_sentences_split_outside_quotes():
    assert split_sentences('Loved "L.A. Confidential". Next: likely a 1990s Crime.') == [
        'Loved "L.A. Confidential"', "Next: likely a 1990s Crime"]


def test_prediction_scored_against_the_next_item():
    target = _item(1, ("Thriller", "Crime"), 1997)
    assert prediction_matches(Prediction("Crime", 1990), target) == (True, True)
    assert prediction_matches(Prediction("Drama", 1980), target) == (False, False)
    assert prediction_matches(None, target) == (False, False)


def test_every_claim_the_generator_writes_passes_the_checker(ml1m):
    context, examples = ml1m
    kinds, phrasings, predictions_right = set(), set(), 0
    for example in examples:
        rationale = rationale_for(example, context, seed=0)
        check = check_text(rationale.text, example_facts(example, context), context.genres)
        assert check.faithful, (rationale.text, check.false_claims, check.parsed.unparsed)
        assert check.claims == len(rationale.claims) >= 1
        target = context.catalog[example.target.item_id]
        predictions_right += prediction_matches(rationale.prediction, target) == (True, True)
        kinds |= {type(c).__name__ for c in rationale.claims}
        phrasings.add(rationale.text.split(" ", 1)[0])
    assert predictions_right == len(examples)  # hindsight: the conclusion is true of the next item
    assert kinds == {"GenreLead", "DecadeLead", "RatingLead", "RecentGenre"}
    assert len(phrasings) >= 4  # several openings, not one boilerplate


def test_token_budget_is_kept_and_the_phrasing_is_seeded(ml1m):
    context, examples = ml1m
    words = lambda text: len(text.split())  # noqa: E731  (a stand-in token counter)
    for example in examples[:100]:
        rationale = rationale_for(example, context, seed=3, count_tokens=words, max_tokens=16)
        assert words(rationale.assistant_text) <= 16
        assert rationale.assistant_text.endswith(ANSWER_MARKER)
        assert rationale == rationale_for(example, context, seed=3, count_tokens=words, max_tokens=16)
    texts = {rationale_for(examples[0], context, seed=s).text for s in range(8)}
    assert len(texts) > 1


@pytest.mark.slow
def test_rationales_fit_the_served_budget_in_smollm2_tokens(ml1m):
    from model.engines.loading import load_model
    from service.settings import Settings

    context, examples = ml1m
    count = token_counter(load_model("smollm2").tokenizer)
    lengths = [count(teacher_forced_text(e, context, 0, count)) for e in examples]
    assert max(lengths) <= MAX_RATIONALE_TOKENS < Settings().default_reasoning_tokens


def test_context_facts_keep_the_prompt_window():
    items = [_item(i, ("Drama",) if i < 10 else ("Comedy",), 1990) for i in range(30)]
    context = ReasoningContext(Catalog.of(items))
    facts = context.facts([it.item_id for it in items], [4.0] * 30)
    assert len(facts.entries) == 20 and facts.top_genres == ["Comedy"]
    rationale = write_rationale(facts, items[0], random.Random(0))
    assert rationale.prediction == Prediction("Drama", 1990)


def test_a_forecast_conclusion_reads_the_window_not_the_next_item(facts):
    target = _item(99, ("Western",), 1950)
    assert write_rationale(facts, target, random.Random(0)).prediction == Prediction("Western", 1950)
    forecast = write_rationale(facts, target, random.Random(0), hindsight=False)
    assert forecast.prediction == Prediction("Comedy", 1990)  # the recent genre, the dominant decade
    assert check_text(forecast.text, facts).faithful


class _ScriptedReasoner:
    """An engine double whose `reason` answers each user prompt with a scripted (text, wrote_marker)."""

    def __init__(self, answers: dict[str, tuple[str, bool]]) -> None:
        self.answers = answers

    def reason(self, prompts: Sequence[str], max_new_tokens: int) -> list[Reasoning]:
        return [Reasoning(self.answers[p][0], np.zeros(4, np.float32), len(self.answers[p][0].split()),
                          self.answers[p][1]) for p in prompts]


def test_evaluation_scores_marker_faithfulness_and_genre(ml1m, tmp_path):
    context, examples = ml1m
    picked = [e for e in examples if "Western" not in context.catalog[e.target.item_id].genres
              and len(e.history) >= 5][:3]
    true = rationale_for(picked[0], context, seed=0)
    texts = [(true.text, True), ("Mostly Western. Next: likely a 1920s Western.", True),
             ("The user likes movies and movies and", False)]
    prompts = [LlmRanker.prompt(user_history(e, context.catalog)) for e in picked]
    scores = score_reasonings(_ScriptedReasoner(dict(zip(prompts, texts, strict=True))), picked, context, 48,
                              batch_size=2)
    summary = scores.summary()
    assert summary["marker_rate"] == pytest.approx(2 / 3) and summary["claims"] == len(true.claims) + 1
    assert summary["faithfulness"] == pytest.approx(len(true.claims) / (len(true.claims) + 1))
    assert summary["genre_match"] == pytest.approx(1 / 3) and summary["with_unparsed_sentences"] == pytest.approx(1 / 3)
    meta = {"command": "reasonrec eval-reasoning (test)", "date": "today", "machine": "test", "split": "loo",
            "data": {"dataset": "ml-1m"}, "users": "3", "model": {}, "adapter": None, "reasoning_tokens": 48,
            "batch_size": 2}
    md, js = write_reasoning_report(tmp_path / "report", meta, scores, 2, context)
    page = md.read_text()
    good, bad = page.split("## Bad reasonings")
    assert true.text in good and texts[2][0] in bad and texts[1][0] in bad
    assert json.loads(js.read_text())["metrics"]["marker_rate"] == pytest.approx(2 / 3)
