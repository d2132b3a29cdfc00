"""Choose the weight of the popularity prior (`indexer.prior`) on validation users: `reasonrec experiment tune-prior`.

The LLM's `direct-cosine` ranker (base model or adapter: raw states by cosine, no item table) ranks
a seeded sample of validation examples once per weight of `PRIOR_WEIGHTS`; the user vectors are computed once
and taken from the evaluation's disk cache afterwards. The weight with the best NDCG@10 is the one to pass to
`reasonrec eval --popularity-prior` and to serve as `REASONREC_POPULARITY_PRIOR`; choosing it on validation
users keeps the test rows of the evaluation free of that choice. Writes `<dataset>-<protocol>-prior.{md,json}`
(`...-prior-<adapter folder name>.{md,json}` with an adapter).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from indexer.prior import PRIOR_WEIGHTS
from trainer.data import load_dataset
from trainer.data.protocols import make_split
from trainer.data.splits import sample_examples
from trainer.evaluation.config import EvalConfig
from trainer.evaluation.llm import LlmContext
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import rank_examples
from trainer.protocol.metrics import mean_metrics

"""Weights tried (0 = plain cosine, 1 = nearly the popularity ranking with cosine tie-breaks)."""


def tune_prior(config: EvalConfig, valid_users: int, command: str) -> list[Path]:
    """Rank `valid_users` seeded validation examples (seed `config.sample_seed`) with `direct` at every weight;
    write the table and the best weight as markdown + JSON into `config.out_dir`; returns their paths."""
    if valid_users < 1:
        raise ValueError(f"--valid-users must be >= 1, got {valid_users}")
    ds = load_dataset(config.dataset, config.data_path)
    split = make_split(ds, config.protocol, config.cold_frac, config.split_seed)
    candidates = ds.catalog.ids()
    valid = sample_examples(split.valid, valid_users, config.sample_seed)
    llm = LlmContext(replace(config, rankers=("direct",)), ds, split, candidates)
    rows = []
    for weight in PRIOR_WEIGHTS:
        ranking = rank_examples(llm.ranker("direct-cosine", weight), valid, candidates, desc=f"prior {weight}")
        metrics = mean_metrics(ranking.per_query())
        rows.append({"weight": weight, **{m: metrics[m] for m in ("HR@10", "NDCG@10", "HR@20", "MRR")}})
    best = max(rows, key=lambda row: row["NDCG@10"])
    index = shown_path(config.index_dir) if config.index_dir else "the raw item states (cached), centered"
    report = {"command": command, "model": llm.describe(), "index": index, "dataset": ds.name,
              "protocol": split.protocol, "valid_users": len(valid), "sample_seed": config.sample_seed,
              "best_weight": best["weight"], "rows": rows,
              "machine": machine_line(),
              "date": datetime.now(UTC).isoformat(timespec="seconds")}
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{ds.name}-{config.protocol}-prior" + (f"-{config.adapter.name}" if config.adapter else "")
    paths = [config.out_dir / f"{stem}.json", config.out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(_markdown(report), encoding="utf-8")
    return paths


def _markdown(report: dict) -> str:
    lines = [f"# Popularity prior weight on {report['dataset']}, {report['protocol']} validation users", "",
             f"- **command**: `{report['command']}`", f"- **model**: {report['model']}; index `{report['index']}`",
             f"- **users**: {report['valid_users']} seeded validation examples (seed {report['sample_seed']}), full "
             "ranking over every catalog item, history excluded; score = cosine + w x log(1 + the item's training "
             "interactions) (`indexer/prior.py`)",
             f"- **machine**: {report['machine']}; **date**: {report['date']}",
             f"- **best weight** (by NDCG@10): {report['best_weight']}", "",
             "| w | HR@10 | NDCG@10 | HR@20 | MRR |", "|---|---|---|---|---|"]
    lines += [f"| {r['weight']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | {r['HR@20']:.4f} | {r['MRR']:.4f} |"
              for r in report["rows"]]
    return "\n".join(lines) + "\n"
