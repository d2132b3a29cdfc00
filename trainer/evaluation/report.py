"""Evaluation reports: the JSON written by the evaluation job, the markdown rendered from it (so the two always
agree), a bar chart of the rankers, and TREC run/qrels files (`qid Q0 docid rank score tag`).

Report rows: {"ranker", "part", "sample", "users", "own", "metrics": {name: {"mean", "ci95"}}}; `sample`
is "all" (every test example of the part) or the name of a seeded user sample. A ranker's own rows are the
ones it was run on; the paired tables show every ranker on the same sampled users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from trainer.protocol.harness import RankingResult

TABLE_METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")
PAIRED_METRICS = ("HR@10", "NDCG@10", "MRR")
RATING_METRICS = ("MAE", "RMSE", "accuracy", "macro_F1")


def write_report(report: dict, out_dir: Path, stem: str) -> list[Path]:
    """`<stem>.json`, `<stem>.md`, `<stem>.png` and, when trained rankers record their epochs,
    `<stem>-training.png` in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    curves = training_curves(report)
    training_png = out_dir / f"{stem}-training.png" if curves else None
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(report, paths[2].name, training_png.name if training_png else None),
                        encoding="utf-8")
    plot_rankers(report, paths[2])
    if training_png is not None:
        plot_training(curves, report["title"], training_png)
        paths.append(training_png)
    return paths


def training_curves(report: dict) -> dict[str, list[dict]]:
    """Each trained ranker's epochs (`seconds`, `NDCG@10`) as its training job recorded them; the two table
    rankers share one run (the training of g, validated with a share of the items served by g alone), shown once."""
    curves: dict[str, list[dict]] = {}
    for name, info in report["rankers"].items():
        history = info.get("history")
        if history:
            curves["item table: g, items partly served by g" if name.startswith("table") else name] = history
    return curves


def _cell(metric: dict) -> str:
    low, high = metric["ci95"]
    return f"{metric['mean']:.4f} [{low:.4f}, {high:.4f}]"


def _table(rows: Sequence[dict], metrics: Sequence[str], lead: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join([*lead, *metrics]) + " |", "|" + "---|" * (len(lead) + len(metrics))]
    for row in rows:
        lines.append("| " + " | ".join([*(str(row[k]) for k in lead), *(_cell(row["metrics"][m]) for m in metrics)])
                     + " |")
    return lines


def own_rows(report: dict) -> list[dict]:
    return [row for row in report["rows"] if row.get("own")]


def render_markdown(report: dict, chart_name: str, training_chart: str | None = None) -> str:
    lines = [f"# {report['title']}", "", *[f"- **{k}**: {v}" for k, v in report["header"].items()], ""]
    lines += ["## Ranking: every ranker on its own users", "",
              f"Mean over users with a 95% percentile bootstrap interval ({report['bootstrap']} resamples of users). "
              "Recall@K equals HR@K here (one target per user) and is in the JSON.", ""]
    lines += _table(own_rows(report), TABLE_METRICS, ("ranker", "part", "sample", "users"))
    for sample in report.get("samples", []):
        rows = [r for r in report["rows"] if r["sample"] == sample["name"]]
        lines += ["", f"## Paired: every ranker on the {sample['name']} ({sample['description']})", ""]
        lines += _table(rows, PAIRED_METRICS, ("ranker", "part", "users"))
    if report.get("twins"):
        twins = report["twins"]
        lines += ["", "## Hot-added twins", "", twins["note"], "",
                  f"| items | pairs | twin in top {twins['k']} | original in top {twins['k']} | gated: twin | "
                  "gated: original |", "|---|---|---|---|---|---|",
                  f"| {twins['items']} | {twins['pairs']} | {twins['twin_in_top_k']:.3f} | "
                  f"{twins['original_in_top_k']:.3f} | {twins.get('twin_gated_in_top_k', float('nan')):.3f} | "
                  f"{twins.get('original_gated_in_top_k', float('nan')):.3f} |"]
    if report.get("ratings"):
        lines += ["", "## Ratings (leave-one-out test targets)", "", report["ratings"]["note"], ""]
        lines += _table(report["ratings"]["rows"], RATING_METRICS, ("predictor", "sample", "users"))
    lines += ["", f"![rankers]({chart_name})", ""]
    if training_chart:
        lines += ["Validation NDCG@10 of the trained rankers against their training time (each job's own epochs, "
                  "wall seconds on the machine that trained it):", "", f"![training]({training_chart})", ""]
    lines += [*_run_times(report), "", "## Notes", "",
              *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def _run_times(report: dict) -> list[str]:
    """Wall seconds of each ranker's run (scoring + ranking all its users; LLM batches found in the disk cache of
    an earlier run cost ~0 s, hence their counts) and of the LLM rating runs."""
    lines = ["## Run times (wall seconds on this machine)", "", "| run | users | seconds | batches computed / cached |",
             "|---|---|---|---|"]
    for name, info in report["rankers"].items():
        batches = f"{info['computed_batches']} / {info['cached_batches']}" if "computed_batches" in info else "-"
        lines.append(f"| rank: {name} | {info['users']} | {info['seconds']} | {batches} |")
    for row in (report.get("ratings") or {}).get("rows", []):
        if "seconds" in row:
            lines.append(f"| rate: {row['predictor']} | {row['users']} | {row['seconds']} | "
                         f"{row['computed_batches']} / {row['cached_batches']} |")
    return lines


def plot_rankers(report: dict, path: Path) -> None:
    """Bars of HR@10 and NDCG@10 per ranker (one bar per part) with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = own_rows(report)
    rankers = list(dict.fromkeys(r["ranker"] for r in rows))
    parts = list(dict.fromkeys(r["part"] for r in rows))
    width = 0.8 / len(parts)
    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.2 * len(rankers), 4.2))
    for ax, metric in zip(axes, ("HR@10", "NDCG@10"), strict=False):
        for p, part in enumerate(parts):
            found = {r["ranker"]: r["metrics"][metric] for r in rows if r["part"] == part}
            xs = [i + (p - (len(parts) - 1) / 2) * width for i, name in enumerate(rankers) if name in found]
            means = [found[name]["mean"] for name in rankers if name in found]
            errors = [[found[n]["mean"] - found[n]["ci95"][0] for n in rankers if n in found],
                      [found[n]["ci95"][1] - found[n]["mean"] for n in rankers if n in found]]
            bars = ax.bar(xs, means, width, yerr=errors, capsize=3, label=part)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xticks(range(len(rankers)), rankers)
        ax.set_title(metric)
        ax.set_ylim(0, max(max(r["metrics"][metric]["ci95"][1] for r in rows) * 1.2, 0.01))
    if len(parts) > 1:
        axes[0].legend(title="part")
    fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    """Validation NDCG@10 against cumulative training seconds, one line per trained ranker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, epochs in curves.items():
        ax.plot([e["seconds"] / 60 for e in epochs], [e["NDCG@10"] for e in epochs], marker=".", label=name)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("validation NDCG@10")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trec_docid(item_id: str) -> str:
    """Item ids may hold spaces ("Toy Story (1995)"); TREC fields may not: percent-encode whitespace, '%' and
    non-ASCII characters (reversible with `urllib.parse.unquote`)."""
    return quote(item_id, safe="!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def write_trec(result: RankingResult, run_path: Path, qrels_path: Path) -> None:
    """The run (top items kept by the harness, at most 100 per query) and the qrels of its examples."""
    if not result.top:
        raise ValueError(f"{result.ranker}: the harness kept no top items; rank with keep_top > 0")
    run_path.parent.mkdir(parents=True, exist_ok=True)
    with run_path.open("w", encoding="utf-8") as run:
        for example, top in zip(result.examples, result.top, strict=False):
            for rank, (item_id, score) in enumerate(top, start=1):
                run.write(f"{example.user_id} Q0 {trec_docid(item_id)} {rank} {score:.6f} {result.ranker}\n")
    with qrels_path.open("w", encoding="utf-8") as qrels:
        for example in result.examples:
            qrels.write(f"{example.user_id} 0 {trec_docid(example.target.item_id)} 1\n")
