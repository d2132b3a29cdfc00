"""Where a cold-items table loses its cold targets (`reasonrec experiment cold-diagnosis`, issue #40): each test user
whose target is a cold item has the target ranked among the cold items alone (every item served by g(c) alone;
history excluded), by
- `g`: the served score u . g(c) + g_b(c) with u = s(history) (the `table` ranker of `reasonrec eval` over the
  table's rows as `reasonrec index` serves them),
- `content`: the MiniLM ranker's cosine (`model.rankers.content`, the `content` row of `reasonrec eval`),
- `random`: seeded uniform scores,
and, for contrast, `g` and `content` among all items (what `reasonrec eval --protocol cold-items` reports for the
cold part). If `g` ranks its targets well among cold items but not among all, the text carries the signal and the
miss is the calibration against the warm rows; if it ranks them near random among cold items, the signal is weak.
Writes `<dataset>-cold-diagnosis.{md,json}` into `out_dir`.

The calibration (scale and bias offset of g, `trainer.train.table.content.calibrate`) moves every cold item alike,
so it cannot change the order among cold items: that column is the content map's own signal. The measurement reads
u = s(history): a table whose head f(h) is not zero would need the language model's user states, and is refused
(cold-items tables are trained with --no-head).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.engines.base import Engine
from model.networks.minilm import MiniLMEncoder, TextEncoder
from model.rankers.base import ScoreRanker
from model.rankers.content import ContentRanker
from model.rankers.table import TableRanker
from trainer.data.protocols import SplitConfig
from trainer.data.splits import Example
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import CoreRanker, rank_examples
from trainer.protocol.metrics import bootstrap_ci, mean_metrics, ranking_metrics
from trainer.train.table.features import table_store
from trainer.train.table.served import ServedTable, load_served_table

METRICS = ("HR@10", "NDCG@10", "MRR")


@dataclass
class ColdDiagnosisConfig(SplitConfig):
    """What `reasonrec experiment cold-diagnosis` measures: a finished cold-items table on its test split."""

    protocol: str = "cold-items"
    """The split the table was trained on (cold-items: the only one with cold items)."""
    model: str = "smollm2"
    """Language model of the table's item states (read from the table cache): smollm2, tiny or an HF folder."""
    seed: int = 0
    """Seed of the table and SASRec+ runs (their folders)."""
    table: Path | None = None
    """Item-table folder (default: where `reasonrec train-table` writes it)."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ folder the table was built on (default: where `reasonrec train-sasrec` writes it)."""
    random_seed: int = 0
    """Seed of the random ranker's scores."""
    bootstrap: int = 1000
    """Bootstrap resamples of users for the 95% intervals."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap resamples (the same resamples for every row: the rows are paired)."""
    out_dir: Path = Path("docs/results")
    """Folder of the report."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out_dir = Path(self.out_dir)
        if self.protocol != "cold-items":
            raise ValueError(f"--protocol must be cold-items (the split with cold items), got {self.protocol!r}")
        if self.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {self.bootstrap}")


class RandomRanker:
    """Seeded uniform scores: the floor every ranking is read against (expected HR@10 = 10 / candidates)."""

    name = "random"
    batch_size = 512

    def __init__(self, n_candidates: int, seed: int) -> None:
        self.n_candidates = n_candidates
        self.generator = np.random.default_rng(seed)

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        return self.generator.random((len(examples), self.n_candidates))


def cold_diagnosis(config: ColdDiagnosisConfig, command: str = "", engine: Engine | None = None,
                   encoder: TextEncoder | None = None) -> list[Path]:
    """Load the table (`load_served_table`), rank, write the report; returns its paths (.md, .json). `engine`
    encodes item states missing from the table cache, `encoder` is MiniLM unless given (tests pass stand-ins)."""
    started = datetime.now(UTC)
    if engine is None:
        from model.engines.transformers_engine import load_engine

        engine = load_engine(config.model)
    served = load_served_table(config.dataset, config.protocol, engine, config.data_path, config.cold_frac,
                               config.split_seed, config.seed, config.table, config.sasrec_checkpoint)
    ranks = diagnosis_ranks(served, encoder or MiniLMEncoder(), config.random_seed)
    report = _report(config, served, ranks, command, started)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = config.out_dir / f"{served.dataset.name}-cold-diagnosis"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".json")]
    paths[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[0].write_text(_markdown(report), encoding="utf-8")
    return paths


@dataclass
class DiagnosisRanks:
    """Per cold-target user, the 1-based rank of the target under each (ranker, candidates) row."""

    examples: list[Example]
    cold_ids: list[str]
    """The items served by g(c) alone: the candidates of the rows among cold items."""
    rows: dict[tuple[str, str], np.ndarray]
    """(ranker, "cold items" or "all items") -> ranks."""


def diagnosis_ranks(served: ServedTable, encoder: TextEncoder, random_seed: int) -> DiagnosisRanks:
    """The ranks of every test target served by g(c) alone (users with a history item in the table), among the
    cold items and among all items."""
    model, code = served.artifact.model, served.artifact.code_of
    if not model.head_is_zero:
        raise ValueError("this table has a head f(h) that is not zero: the diagnosis reads u = s(history) only "
                         "(train the cold-items table with --no-head)")
    cold_ids = served.shown_ids()
    cold = set(cold_ids)
    examples = [e for e in served.split.test if e.target.item_id in cold
                and any(x.item_id in code for x in e.history)]
    if not examples:
        raise ValueError("no test example has a target served by g(c) alone: is this a cold-items table?")
    catalog, all_ids = served.dataset.catalog, served.dataset.catalog.ids()
    table = TableRanker(served.artifact, table_store(served.artifact, served.features, catalog))
    content = ContentRanker(encoder, [catalog[i] for i in all_ids])

    def ranks_of(core: ScoreRanker | RandomRanker, candidates: list[str]) -> np.ndarray:
        ranker = core if isinstance(core, RandomRanker) else CoreRanker(core, catalog, candidates)
        return rank_examples(ranker, examples, candidates, desc=f"{ranker.name} among {len(candidates)}").ranks

    rows = {
        ("g", "cold items"): ranks_of(table, cold_ids),
        ("content", "cold items"): ranks_of(content, cold_ids),
        ("random", "cold items"): ranks_of(RandomRanker(len(cold_ids), random_seed), cold_ids),
        ("g", "all items"): ranks_of(table, all_ids),
        ("content", "all items"): ranks_of(content, all_ids),
    }
    return DiagnosisRanks(examples, cold_ids, rows)


RANKER_LINES = {
    "g": "u . g(c) + g_b(c), u = s(history): the `table` ranker over the rows as served (calibration folded into g)",
    "content": "MiniLM: cosine between the mean vector of the history items and the item's (`content` ranker)",
    "random": "seeded uniform scores",
}


def _report(config: ColdDiagnosisConfig, served: ServedTable, ranks: DiagnosisRanks, command: str,
            started: datetime) -> dict:
    ds, split = served.dataset, served.split
    rows = []
    for (ranker, among), values in ranks.rows.items():
        per_query = {m: v for m, v in ranking_metrics(values).items() if m in METRICS}
        ci = bootstrap_ci(per_query, config.bootstrap, config.bootstrap_seed)
        finite = values[np.isfinite(values)]
        rows.append({"ranker": ranker, "among": among, "users": len(values),
                     "candidates": len(ranks.cold_ids) if among == "cold items" else len(ds.catalog),
                     "median_rank": float(np.median(finite)) if len(finite) else float("inf"),
                     "metrics": {m: {"mean": v, "ci95": list(ci[m])} for m, v in mean_metrics(per_query).items()}})
    drawn = len(set(getattr(split, "cold_items", ())) & set(ranks.cold_ids))
    return {
        "title": f"{ds.name}: cold targets ranked among the cold items only (g, MiniLM, random)",
        "header": {
            "command": f"`{command}`",
            "data": f"{ds.name}: {len(ds.histories)} users, {len(ds.catalog)} items, {ds.n_interactions} interactions",
            "split": f"{split.protocol}; {len(ranks.examples)} test users whose target is served by g(c) alone; "
                     f"{len(ranks.cold_ids)} such items ({drawn} drawn cold, {len(ranks.cold_ids) - drawn} other items "
                     "without a training interaction), history excluded",
            "models": f"table {shown_path(served.table_folder)} (calibration "
                      f"{_calibration(served.artifact.meta.get('calibration'))}) on SASRec+ "
                      f"{shown_path(served.sasrec_folder)}; content: all-MiniLM-L6-v2",
            "seeds": f"split {config.split_seed}, table {config.seed}, random ranker {config.random_seed}, bootstrap "
                     f"{config.bootstrap_seed} ({config.bootstrap} resamples of users)",
            "machine": machine_line(),
            "date": f"{started.isoformat(timespec='seconds')} to {datetime.now(UTC).isoformat(timespec='seconds')}",
        },
        "cold_items": len(ranks.cold_ids),
        "drawn_cold_items": drawn,
        "cold_target_users": len(ranks.examples),
        "random_expected_hr10": min(1.0, 10 / len(ranks.cold_ids)),
        "rankers": RANKER_LINES,
        "rows": rows,
    }


def _calibration(calibration: dict | None) -> str:
    if not calibration:
        return "none"
    return f"scale {calibration.get('scale')}, offset {calibration.get('offset', float('nan')):.3f}"


def _markdown(report: dict) -> str:
    lines = [f"# {report['title']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in report["header"].items()]
    lines += ["", "Each test user whose target is a cold item has the target ranked among the cold items only "
              f"({report['cold_items']} candidates, history excluded; random expects HR@10 "
              f"{report['random_expected_hr10']:.4f}), and among all items for contrast (the cold part of "
              "`reasonrec eval --protocol cold-items`). Mean over users with a 95% percentile bootstrap interval; "
              "the resamples are the same for every row. g's calibration moves every cold item alike, so the rows "
              "among cold items are the content map's own order.", "",
              "| ranker | among | candidates | users | HR@10 | NDCG@10 | MRR | median rank |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        cells = [f"{row['metrics'][m]['mean']:.4f} [{row['metrics'][m]['ci95'][0]:.4f}, "
                 f"{row['metrics'][m]['ci95'][1]:.4f}]" for m in METRICS]
        lines.append(f"| {row['ranker']} | {row['among']} | {row['candidates']} | {row['users']} | "
                     f"{' | '.join(cells)} | {row['median_rank']:g} |")
    lines += ["", "Rankers:", *[f"- {name}: {text}" for name, text in report["rankers"].items()], ""]
    return "\n".join(lines)
