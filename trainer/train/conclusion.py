"""The conclusion term's job (`reasonrec train-conclusion`): how much the genre and decade a taught reasoning
concludes should raise the items of that genre and decade (`model.rankers.conclusion`), learned on validation
users and measured on test users against s(history) alone. The reasoning-then-recommend order is R2ec's
("Towards Large Recommender Models with Reasoning"); the term is how a 135M model's conclusion reaches the list.

Users: seeded validation examples (history up to the second-last item, target the second-last) choose the
weights, seeded test examples measure them; the engine (the base model holding the reasoning adapter, greedy, the
served budget) writes one reasoning per user, cached on disk so a rerun resumes. s(history) is SASRec+'s score
(the served table's `s` and warm rows are SASRec+'s, so for warm items the two rank alike). Weights: the grid
`GRID` for each of the two, the pair with the best validation NDCG@10 (ties: the smaller sum; (0, 0) is s alone).
Reported with paired bootstrap intervals: NDCG@10 and HR@10 of s alone and of s + term, the conclusion's accuracy
(its genre among the next item's genres, its decade the next item's) against the window's top genre and decade,
the marker rate and faithfulness of the reasonings, and the share of the top 10 matching the concluded genre and
decade with and without the term. The weights go beside the adapter (`conclusion.json`), the report to
`docs/results/<dataset>-reasoning-term.{md,json}`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from indexer.core.catalog import Catalog
from indexer.core.durable import replace_text
from indexer.core.paths import SHIPPED, artifacts_dir, finished_or_shipped, sasrec_dir
from model.claims import Prediction, parse, prediction_matches
from model.engines.base import Engine
from model.networks.sasrec import SasrecScorer, finished_checkpoint
from model.prompts import UserHistory
from model.rankers.conclusion import ConclusionTerm
from model.rankers.llm import LlmRanker
from model.rankers.sasrec import SasrecRanker
from trainer.data.protocols import SplitConfig, test_parts
from trainer.data.splits import Example, sample_examples
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import user_history
from trainer.protocol.metrics import bootstrap_ci, ranking_metrics, resamples, target_ranks
from trainer.reasoning.checker import check_text
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.rationales import example_facts

GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Weights tried for the genre and for the decade, in the units of s(history)'s scores."""


@dataclass
class ConclusionConfig(SplitConfig):
    """What `reasonrec train-conclusion` learns and measures."""

    adapter: Path | None = None
    """The reasoning adapter (`reasonrec train-reasoning`) whose conclusions are read; the weights are saved in it."""
    model: str = "smollm2"
    """Base model the adapter was trained on: smollm2, tiny or an HF folder."""
    engine: str = "fast"
    """Engine of the reasonings: fast (the served default, exact precision) or transformers (its reference; the
    same greedy text, `docs/results/bench_fast_engine.md`)."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ of the same split (s); default the trained one for this protocol, else the shipped one."""
    valid_users: int = 300
    """Seeded validation users that choose the weights."""
    test_users: int = 300
    """Seeded test users the weights are measured on."""
    reasoning_tokens: int = 48
    """Token budget of each reasoning (the served default)."""
    batch_size: int = 8
    """Prompts per engine call."""
    seed: int = 0
    """Seed of the user samples and the bootstrap."""
    bootstrap: int = 1000
    """Bootstrap resamples of the intervals."""
    out_dir: Path = Path("docs/results")
    """Where the report goes."""
    cache_dir: Path | None = None
    """Where the reasonings are cached (resumable); default `artifacts/conclusion-cache`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter is None:
            raise ValueError("--adapter is needed: the reasoning adapter whose conclusions the term reads")
        self.adapter, self.out_dir = Path(self.adapter), Path(self.out_dir)
        self.sasrec_checkpoint = Path(self.sasrec_checkpoint) if self.sasrec_checkpoint else None
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else None
        if self.engine not in ("fast", "transformers"):
            raise ValueError(f"--engine must be fast or transformers, got {self.engine!r}")
        if min(self.valid_users, self.test_users, self.reasoning_tokens, self.batch_size, self.bootstrap) < 1:
            raise ValueError("--valid-users, --test-users, --reasoning-tokens, --batch-size, --bootstrap must be >= 1")


@dataclass(frozen=True)
class Reasoned:
    """One user's reasoning as the served engine wrote it."""

    text: str
    tokens: int
    wrote_marker: bool


@dataclass
class UserSet:
    """Examples with their reasonings, conclusions and s(history) scores over the scorer's items."""

    examples: list[Example]
    reasonings: list[Reasoned]
    predictions: list[Prediction | None]
    scores: np.ndarray
    targets: np.ndarray
    genre_match: np.ndarray
    """(users, items): the item is of the concluded genre."""
    decade_match: np.ndarray

    def ranks(self, term: ConclusionTerm) -> np.ndarray:
        return target_ranks(self.scores + term.genre * self.genre_match + term.decade * self.decade_match,
                            self.targets)


def train_conclusion(config: ConclusionConfig, engine: Engine, command: str) -> tuple[ConclusionTerm, list[Path]]:
    """Choose the weights on validation, measure them on test, save them beside the adapter; the report's paths."""
    assert config.adapter is not None
    ds, split = config.load()
    scorer = SasrecScorer.load(_sasrec(config))
    ranker, context = SasrecRanker(scorer), ReasoningContext(ds.catalog)
    cache = ReasoningCache(config.cache_dir or artifacts_dir() / "conclusion-cache", engine, config.reasoning_tokens)
    valid = sample_examples(split.valid, config.valid_users, config.seed)
    test = sample_examples(test_parts(split)["all"], config.test_users, config.seed)
    sets = {name: _user_set(examples, engine, cache, ranker, ds.catalog, config, name)
            for name, examples in (("validation", valid), ("test", test))}
    grid = {(g, d): float(ranking_metrics(sets["validation"].ranks(ConclusionTerm(g, d)))["NDCG@10"].mean())
            for g, d in itertools.product(GRID, GRID)}
    best = max(grid, key=lambda w: (round(grid[w], 6), -(w[0] + w[1])))
    term = ConclusionTerm(*best)
    report = _report(config, ds.name, sets, context, term, grid, command)
    term.save(config.adapter, {"command": command, "dataset": ds.name, "validation_ndcg10": grid[best],
                               "validation_ndcg10_s_alone": grid[(0.0, 0.0)],
                               **{k: report[k] for k in ("data", "test", "reasoning", "conclusion_accuracy", "date",
                                                         "machine")}})
    return term, _write(report, config.out_dir / f"{ds.name}-reasoning-term")


def _sasrec(config: ConclusionConfig) -> Path:
    return find_sasrec(config.dataset, config.protocol, config.sasrec_checkpoint)


def find_sasrec(dataset: str, protocol: str, given: Path | None = None) -> Path:
    """`given`, else the finished SASRec+ of this dataset and protocol, else the shipped one."""
    if given is not None:
        return given
    found = finished_or_shipped(sasrec_dir(dataset, protocol), SHIPPED / dataset / "sasrec",
                                lambda f: bool(finished_checkpoint(f)))
    if found is None:
        raise FileNotFoundError(f"no finished SASRec+ for {dataset}: run `reasonrec train-sasrec --dataset "
                                f"{dataset}` or pass --sasrec-checkpoint")
    return found


class ReasoningCache:
    """The engine's reasonings of user prompts, kept in a JSON file per engine and budget (resumable)."""

    def __init__(self, folder: Path, engine: Engine, tokens: int) -> None:
        key = json.dumps([engine.fingerprint.to_json(), engine.reasoning_adapter, tokens], sort_keys=True)
        self.path = folder / f"reasonings-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        self.engine, self.tokens = engine, tokens
        self.known: dict[str, list] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, prompts: list[str], batch_size: int, desc: str) -> list[Reasoned]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.known]
        for first in tqdm(range(0, len(missing), batch_size), desc=desc, unit="batch"):
            batch = missing[first : first + batch_size]
            for prompt, out in zip(batch, self.engine.reason(batch, self.tokens), strict=True):
                self.known[prompt] = [out.text, out.generated_tokens, out.wrote_marker]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_text(self.path, json.dumps(self.known))
        return [Reasoned(*self.known[p]) for p in prompts]


def _user_set(examples: list[Example], engine: Engine, cache: ReasoningCache, ranker: SasrecRanker,
              catalog: Catalog, config: ConclusionConfig, name: str) -> UserSet:
    histories = [user_history(e, catalog) for e in examples]
    reasonings = cache.get([LlmRanker.prompt(h) for h in histories], config.batch_size, f"{name} reasonings")
    genres = {g.lower(): g for item in catalog for g in item.genres}
    predictions = [parse(r.text, genres).prediction for r in reasonings]
    scores, targets = history_scores(examples, histories, ranker)
    items = [catalog[i] for i in ranker.item_ids]
    matches = np.array([[prediction_matches(p, item) for item in items] for p in predictions], dtype=bool)
    return UserSet(examples, reasonings, predictions, scores, targets, matches[..., 0].astype(np.float64),
                   matches[..., 1].astype(np.float64))


def history_scores(examples: list[Example], histories: list[UserHistory], ranker: SasrecRanker
                   ) -> tuple[np.ndarray, np.ndarray]:
    """s(history) over the ranker's items, -inf on each user's own history, and each target's column (-1 when the
    ranker does not know it)."""
    scores = ranker.scores(histories)
    column = {item_id: j for j, item_id in enumerate(ranker.item_ids)}
    for row, example in enumerate(examples):
        scores[row, [column[x.item_id] for x in example.history if x.item_id in column]] = -np.inf
    return scores, np.array([column.get(e.target.item_id, -1) for e in examples])


def _report(config: ConclusionConfig, dataset: str, sets: dict[str, UserSet], context: ReasoningContext,
            term: ConclusionTerm, grid: dict[tuple[float, float], float], command: str) -> dict[str, Any]:
    test = sets["test"]
    alone, with_term = ranking_metrics(test.ranks(ConclusionTerm())), ranking_metrics(test.ranks(term))
    picks = resamples(len(test.examples), config.bootstrap, config.seed)
    figures: dict[str, Any] = {}
    for metric in ("NDCG@10", "HR@10"):
        diff = with_term[metric] - alone[metric]
        figures[metric] = {
            "s alone": float(alone[metric].mean()), "s + term": float(with_term[metric].mean()),
            "s alone ci95": bootstrap_ci({"m": alone[metric]}, config.bootstrap, config.seed)["m"],
            "s + term ci95": bootstrap_ci({"m": with_term[metric]}, config.bootstrap, config.seed)["m"],
            "difference": float(diff.mean()),
            "difference ci95": tuple(float(x) for x in np.quantile(diff[picks].mean(axis=1), [0.025, 0.975])),
        }
    checks = [check_text(r.text, example_facts(e, context), context.genres)
              for r, e in zip(test.reasonings, test.examples, strict=True)]
    claims = sum(c.claims for c in checks)
    right = np.array([prediction_matches(p, context.catalog[e.target.item_id])
                      for p, e in zip(test.predictions, test.examples, strict=True)], dtype=float)
    window = np.array([_window_rule(e, context) for e in test.examples], dtype=float)
    return {
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_line(),
        "data": {"dataset": dataset, "split": config.protocol, "validation_users": len(sets["validation"].examples),
                 "test_users": len(test.examples), "seed": config.seed},
        "model": {"base": config.model, "adapter": shown_path(config.adapter), "engine": config.engine,
                  "sasrec": shown_path(_sasrec(config)), "reasoning_tokens": config.reasoning_tokens},
        "weights": asdict(term), "validation_grid": [[g, d, v] for (g, d), v in sorted(grid.items())],
        "test": figures,
        "reasoning": {"marker_rate": float(np.mean([r.wrote_marker for r in test.reasonings])),
                      "tokens_mean": float(np.mean([r.tokens for r in test.reasonings])),
                      "claims": claims, "faithfulness": sum(c.true_claims for c in checks) / claims if claims else None,
                      "with_conclusion": float(np.mean([p is not None for p in test.predictions]))},
        "conclusion_accuracy": {"genre": float(right[:, 0].mean()), "decade": float(right[:, 1].mean()),
                                "window top genre": float(window[:, 0].mean()),
                                "window top decade": float(window[:, 1].mean())},
        "top10_matching": {"without term": _top_share(test, ConclusionTerm()), "with term": _top_share(test, term)},
    }


def _window_rule(example: Example, context: ReasoningContext) -> tuple[bool, bool]:
    """Whether the window's top genre and top decade are the next item's (the rule a conclusion competes with)."""
    facts = example_facts(example, context)
    genre = facts.top_genres[0] if facts.top_genres else None
    decade = facts.top_decades[0] if facts.top_decades else None
    return prediction_matches(Prediction(genre, decade), context.catalog[example.target.item_id])


def _top_share(users: UserSet, term: ConclusionTerm) -> dict[str, float]:
    """Share of the top-10 items of the concluded genre and of the concluded decade (users with a conclusion)."""
    scores = users.scores + term.genre * users.genre_match + term.decade * users.decade_match
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    rows = [i for i, p in enumerate(users.predictions) if p is not None]
    if not rows:
        return {"genre": float("nan"), "decade": float("nan")}
    return {"genre": float(np.mean([users.genre_match[i, top[i]].mean() for i in rows])),
            "decade": float(np.mean([users.decade_match[i, top[i]].mean() for i in rows]))}


def _write(report: dict[str, Any], stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(report), encoding="utf-8")
    return [md_path, json_path]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _markdown(r: dict[str, Any]) -> str:
    d, w, rs, acc = r["data"], r["weights"], r["reasoning"], r["conclusion_accuracy"]
    lines = [
        f"# The reasoning's conclusion as a score term, {d['dataset']} {d['split']}", "",
        f"- **command**: `{r['command']}`", f"- **date**: {r['date']}", f"- **machine**: {r['machine']}",
        f"- **data**: {d['dataset']}, {d['split']}; weights chosen on {d['validation_users']} seeded validation "
        f"users, measured on {d['test_users']} seeded test users (seed {d['seed']}); full ranking, history excluded",
        f"- **model**: {r['model']['base']} with the reasoning adapter `{r['model']['adapter']}` (greedy, "
        f"{r['model']['reasoning_tokens']} tokens, {r['model']['engine']} engine); s = SASRec+ "
        f"`{r['model']['sasrec']}`",
        f"- **weights** (validation NDCG@10 over the grid): genre +{w['genre']:g}, decade +{w['decade']:g}", "",
        "| test | s alone | s + conclusion term | difference [95% CI, paired] |", "|---|---|---|---|",
    ]
    for metric, f in r["test"].items():
        lo, hi = f["difference ci95"]
        lines.append(f"| {metric} | {f['s alone']:.4f} [{f['s alone ci95'][0]:.4f}, {f['s alone ci95'][1]:.4f}] | "
                     f"{f['s + term']:.4f} [{f['s + term ci95'][0]:.4f}, {f['s + term ci95'][1]:.4f}] | "
                     f"{f['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    top = r["top10_matching"]
    lines += [
        "", "What the reasoning says (test users):", "",
        f"- `<answer>` written by the model: {_pct(rs['marker_rate'])}; {rs['tokens_mean']:.1f} tokens on average; "
        f"claims true of the history: {_pct(rs['faithfulness'])} of {rs['claims']}; a conclusion read in "
        f"{_pct(rs['with_conclusion'])}",
        f"- the conclusion names the next item's genre in {_pct(acc['genre'])} (the window's top genre: "
        f"{_pct(acc['window top genre'])}) and its decade in {_pct(acc['decade'])} (top decade: "
        f"{_pct(acc['window top decade'])})",
        f"- top 10 of the concluded genre: {_pct(top['without term']['genre'])} without the term, "
        f"{_pct(top['with term']['genre'])} with it; of the concluded decade: {_pct(top['without term']['decade'])}"
        f" and {_pct(top['with term']['decade'])}", "",
    ]
    return "\n".join(lines)
