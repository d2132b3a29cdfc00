"""Histories that name items the catalog lacks (`reasonrec experiment title-history`, issue #40 part 4): each test
user's last `titles` history items are given by title only, as a client sends a film the catalog does not have,
and the target is ranked over every item (history excluded) in three forms of the same history:
- `ids`: every item by its catalog id (its served row: SASRec+'s for warm items);
- `titles`: the last items by title only, entering the encoder `s` through their text, `g(features of the title)`
  (`model.rankers.table.history_rows` with the content featurizer), as a hot-added item's row would;
- `dropped`: those items left out (what the served rankers do: the title stays in the prompt only).
`titles` above `dropped` says the placed row carries what the item meant to the user; the gap to `ids` is what
placement by text still loses. Several tables (e.g. g trained by two recipes) are measured on
the same users; the paired differences come with bootstrap intervals. Writes
`<dataset>-<protocol>-title-history.{md,json}`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from indexer.core.catalog import Catalog
from indexer.store import ItemStore
from model.engines.base import Engine
from model.networks.item_features import ContentFeaturizer
from model.networks.minilm import MiniLMEncoder, TextEncoder
from model.networks.table_artifact import TableArtifact
from model.prompts import UserHistory
from model.rankers.table import history_rows, queries, user_vectors
from trainer.data.protocols import SplitConfig
from trainer.data.splits import Example
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import rank_examples, user_history
from trainer.protocol.metrics import bootstrap_ci, mean_metrics, ranking_metrics
from trainer.train.table.features import table_store
from trainer.train.table.served import ServedTable, load_served_table, settings_apart

FORMS = ("ids", "titles", "dropped")
METRICS = ("HR@10", "NDCG@10", "MRR")


@dataclass
class TitleHistoryConfig(SplitConfig):
    """What `reasonrec experiment title-history` measures: finished tables on their split's test users."""

    model: str = "smollm2"
    """Language model of the tables' item states and of the titles' features: smollm2, tiny or an HF folder."""
    tables: tuple[Path, ...] = ()
    """Item-table folders (comma-separated), compared on the same users (default: where `reasonrec train-table`
    writes the protocol's; the first is the reference of the paired differences)."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ folder the tables were built on (default: where `reasonrec train-sasrec` writes it)."""
    titles: int = 2
    """How many of each history's most recent items are given by title only."""
    min_history: int = 5
    """Test users with at least this many history items (so that some stay ids)."""
    bootstrap: int = 1000
    """Bootstrap resamples of users for the 95% intervals (the same resamples for every row: paired)."""
    out_dir: Path = Path("docs/results")
    """Folder of the report."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out_dir = Path(self.out_dir)
        self.tables = tuple(Path(t) for t in self.tables)
        if self.titles < 1 or self.min_history <= self.titles:
            raise ValueError(f"--titles must be >= 1 and --min-history above it, got {self.titles} and "
                             f"{self.min_history}")
        if self.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {self.bootstrap}")


def history_form(history: UserHistory, form: str, titles: int) -> UserHistory:
    """The history with its last `titles` items by id (`ids`), by title only (`titles`) or left out (`dropped`)."""
    if form == "ids":
        return history
    cut = len(history.lines) - titles
    if form == "titles":
        return UserHistory(history.lines, history.item_ids[:cut] + (None,) * titles)
    if form == "dropped":
        return UserHistory(history.lines[:cut], history.item_ids[:cut])
    raise ValueError(f"unknown history form {form!r}; expected one of {FORMS}")


class KnownTitles(ContentFeaturizer):
    """The featurizer of the served rankers with the features of a fixed set of titles computed once, in one batch
    (the measurement reads every title several times)."""

    def __init__(self, featurizer: ContentFeaturizer, titles: Sequence[str]) -> None:
        super().__init__(featurizer.spec, featurizer.engine, featurizer.text_encoder, featurizer.center)
        unique = sorted(set(titles))
        self.by_title = dict(zip(unique, super().of_titles(unique), strict=True)) if unique else {}

    def of_titles(self, titles: Sequence[str]) -> np.ndarray:
        return np.stack([self.by_title[t] for t in titles])


class FormRanker:
    """Scores of every catalog item (store order) with u = s(history in one form), as the served `table` ranker
    computes them, titles included through the featurizer."""

    batch_size = 256

    def __init__(self, table: TableArtifact, store: ItemStore, featurizer: ContentFeaturizer, form: str,
                 titles: int) -> None:
        self.table, self.store, self.featurizer, self.form, self.titles = table, store, featurizer, form, titles
        self.name = form
        self.rows = store.vectors_of(store.catalog.ids())

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        catalog: Catalog = self.store.catalog
        histories = [history_form(user_history(e, catalog), self.form, self.titles) for e in examples]
        max_len = self.table.model.config.max_len
        rows = [history_rows(self.store, h, max_len, self.featurizer, self.table) for h in histories]
        return (queries(user_vectors(self.table, rows)) @ self.rows.T).astype(np.float64)


def title_history(config: TitleHistoryConfig, command: str = "", engine: Engine | None = None,
                  encoder: TextEncoder | None = None) -> list[Path]:
    """Rank every table's test users in the three forms and write the report; returns its paths (.md, .json).
    `engine` and `encoder` (MiniLM unless given) make the titles' features, as the service does."""
    started = datetime.now(UTC)
    if engine is None:
        from model.engines.transformers_engine import load_engine

        engine = load_engine(config.model)
    tables: Sequence[Path | None] = config.tables or (None,)
    results: list[tuple[Path, dict, dict[str, np.ndarray]]] = []
    examples: list[Example] = []
    first: ServedTable | None = None
    for table in tables:
        served = load_served_table(config.dataset, config.protocol, engine, config.data_path, config.cold_frac,
                                   config.split_seed, 0, table, config.sasrec_checkpoint)
        artifact, catalog = served.artifact, served.dataset.catalog
        if not artifact.model.head_is_zero:
            raise ValueError(f"{served.table_folder} has a head f(h) that is not zero: this measurement reads "
                             "u = s(history) only")
        if first is None:
            first = served
            examples = [e for e in served.split.test if len(e.history) >= config.min_history
                        and all(x.item_id in catalog for x in e.history)]
            if not examples:
                raise ValueError(f"no test user has {config.min_history} or more history items")
        titles = [line.title for e in examples for line in user_history(e, catalog).lines[-config.titles:]]
        if encoder is None and artifact.spec.minilm:
            encoder = MiniLMEncoder()  # loaded once, for the first table that reads it
        featurizer = KnownTitles(ContentFeaturizer(artifact.spec, engine, encoder, artifact.center), titles)
        store = table_store(artifact, served.features, catalog)
        ranks = {form: rank_examples(FormRanker(artifact, store, featurizer, form, config.titles), examples,
                                     catalog.ids(), desc=f"{served.table_folder.name}: {form}").ranks
                 for form in FORMS}
        results.append((served.table_folder, artifact.meta, ranks))
    assert first is not None
    report = _report(config, first, examples, results, command, started)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = config.out_dir / f"{first.dataset.name}-{config.protocol}-title-history"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".json")]
    paths[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[0].write_text(_markdown(report), encoding="utf-8")
    return paths


def _paired(a: np.ndarray, b: np.ndarray, bootstrap: int) -> dict:
    """NDCG@10 of `a` minus that of `b`, per user, with its bootstrap interval (the report's resamples)."""
    gain = ranking_metrics(a)["NDCG@10"] - ranking_metrics(b)["NDCG@10"]
    return {"mean": float(gain.mean()), "ci95": list(bootstrap_ci({"gain": gain}, bootstrap, 0)["gain"])}


def _report(config: TitleHistoryConfig, first: ServedTable, examples: list[Example],
            results: list[tuple[Path, dict, dict[str, np.ndarray]]], command: str, started: datetime) -> dict:
    ds, split = first.dataset, first.split
    tables = []
    reference = results[0][2]
    for folder, meta, ranks in results:
        rows = []
        for form in FORMS:
            per_query = {m: v for m, v in ranking_metrics(ranks[form]).items() if m in METRICS}
            ci = bootstrap_ci(per_query, config.bootstrap, 0)
            rows.append({"form": form, "metrics": {m: {"mean": v, "ci95": list(ci[m])}
                                                   for m, v in mean_metrics(per_query).items()}})
        tables.append({
            "table": shown_path(folder), "calibration": meta.get("calibration"),
            "settings_apart": settings_apart(meta, results[0][1]),
            "rows": rows,
            "titles_minus_dropped": _paired(ranks["titles"], ranks["dropped"], config.bootstrap),
            "ids_minus_titles": _paired(ranks["ids"], ranks["titles"], config.bootstrap),
            **({"titles_minus_reference_titles": _paired(ranks["titles"], reference["titles"], config.bootstrap)}
               if ranks is not reference else {}),
        })
    return {
        "title": f"{ds.name}: history items given by title only, against ids and against leaving them out",
        "header": {
            "command": f"`{command}`",
            "data": f"{ds.name}: {len(ds.histories)} users, {len(ds.catalog)} items, {ds.n_interactions} interactions",
            "split": f"{split.protocol}; {len(examples)} test users with >= {config.min_history} history items; "
                     f"the last {config.titles} of each given by title only; full ranking over {len(ds.catalog)} "
                     "items, history excluded",
            "seeds": f"split {config.split_seed}, bootstrap 0 ({config.bootstrap} resamples of users)",
            "machine": machine_line(),
            "date": f"{started.isoformat(timespec='seconds')} to {datetime.now(UTC).isoformat(timespec='seconds')}",
        },
        "users": len(examples),
        "tables": tables,
    }


def _markdown(report: dict) -> str:
    lines = [f"# {report['title']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in report["header"].items()]
    lines += ["", "Mean over users with a 95% percentile bootstrap interval; the users and resamples are the same "
              "for every row. `ids`: the history as the catalog knows it; `titles`: its last items by title only "
              "(placed by g from the title's text, as a hot-added item is); `dropped`: those items left out (as the "
              "served rankers do).", ""]
    for table in report["tables"]:
        lines += [f"## Table `{table['table']}`", "",
                  f"Settings apart from the first table: {table['settings_apart'] or 'none'}.", "",
                  "| history | HR@10 | NDCG@10 | MRR |", "|---|---|---|---|"]
        for row in table["rows"]:
            cells = [f"{row['metrics'][m]['mean']:.4f} [{row['metrics'][m]['ci95'][0]:.4f}, "
                     f"{row['metrics'][m]['ci95'][1]:.4f}]" for m in METRICS]
            lines.append(f"| {row['form']} | {' | '.join(cells)} |")
        lines.append("")
        for key, text in (("titles_minus_dropped", "titles - dropped"), ("ids_minus_titles", "ids - titles"),
                          ("titles_minus_reference_titles", "titles - the first table's titles")):
            if key not in table:
                continue
            gain = table[key]
            lines.append(f"- NDCG@10 {text}: {gain['mean']:+.4f} [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]")
        lines.append("")
    return "\n".join(lines)
