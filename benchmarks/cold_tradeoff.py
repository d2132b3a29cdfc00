"""How cold items trade against warm ones in the item table (docs/design.md section 2): the calibrated content map
`g` of finished `reasonrec train-table` artifacts, with an extra offset added to the bias of every item served by
`g(c)` alone (a cold-items split's cold items), on the split's test examples: cold and warm HR@10 at each offset.

Offsets are in standard deviations of the warm rows' scores; 0 is the calibration the table ships with
(`trainer.train.table.content.calibrate`, chosen on validation), large negative offsets put every cold item last
(SASRec+'s own ranking of the warm items). The curve is what bounds the cold target: how much warm HR@10 each step
of cold HR@10 costs. With several tables (e.g. g trained by two recipes, one pair per seed), each gets its curve and
its cold HR@10 at the warm floor (the best offset that keeps warm HR@10 at `--warm-floor` of SASRec+'s), and the
later tables' gain there over the first (with `--pairs`: each candidate's over its own reference, e.g. one pair per
seed) is given with a paired bootstrap interval over the cold-target users (the test users are the same for every
table). Each table's cold-slot gate (`model.rankers.cold_slots`: the best cold items take up to `max_slots` of the
last places of the calibrated top 10, each within a margin of the warm item it displaces; exclusive: cold items are
listed through the slots only), as `train-table` chose it on validation, is measured on the same test examples
beside fixed slots (1-3 places, any margin, with and without exclusive), with its paired change against the
calibrated list.

    python -m benchmarks.cold_tradeoff --dataset ml-100k   # -> docs/results/bench_cold_tradeoff_ml-100k.{md,json}
    python -m benchmarks.cold_tradeoff --dataset ml-100k --table A --table B --name recipe
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import Report
from indexer.core.paths import table_dir
from model.rankers.cold_slots import ColdSlots
from trainer.protocol.metrics import bootstrap_ci, ranking_metrics
from trainer.train.table.cold_slots import TopLists, described, fit_cold_slots
from trainer.train.table.content import Ranking
from trainer.train.table.served import load_served_table, settings_apart

PROTOCOL = "cold-items"
OFFSETS = (-100.0, -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)
BOOTSTRAP = 1000


def curve(dataset: str, table: Path, warm_floor: float) -> dict:
    """The table's rows per offset, and the offset that keeps warm HR@10 at `warm_floor` of the all-cold-last
    level with the most cold HR@10 (its per-example hits kept for the paired interval)."""
    served = load_served_table(dataset, PROTOCOL, table=table)
    ranking = served.ranking(served.split.test)
    spread, cold = ranking.score_sd(), ranking.target_shown
    rows, hits_at = [], {}
    for offset in OFFSETS:
        ranks = ranking.ranks(1.0, offset * spread)
        hits = ranks <= 10
        hits_at[offset] = hits
        rows.append({"offset_sd": offset, "cold_hr10": float(hits[cold].mean()), "warm_hr10": float(hits[~cold].mean()),
                     "all_ndcg10": float(ranking_metrics(ranks)["NDCG@10"].mean())})
    floor = warm_floor * rows[0]["warm_hr10"]
    best = max((r for r in rows if r["warm_hr10"] >= floor), key=lambda r: r["cold_hr10"])
    meta = served.artifact.meta
    if "cold_slots" in meta:
        chosen, fitted_by = ColdSlots.from_meta(meta), meta["cold_slots"].get("command") or "train-table"
    else:  # a table from before the gate: fitted here as train-table now does
        tolerance = float(meta.get("config", {}).get("warm_tolerance", 0.05))
        chosen, fitted_by = fit_cold_slots(served.ranking(served.split.valid), 1.0, 0.0, tolerance)[0], "this benchmark"
    return {"table": table.name, "calibration": meta.get("calibration"), "meta": meta,
            "score_sd": spread, "test_examples": len(cold), "cold_targets": int(cold.sum()), "warm_floor": floor,
            "at_floor": best, "rows": rows, "_cold_hits": hits_at[best["offset_sd"]][cold],
            "gate": gate_rows(ranking, chosen, spread) | {"fitted_by": fitted_by}}


def gate_rows(ranking: Ranking, chosen: ColdSlots, spread: float) -> dict:
    """The calibrated list, the chosen gate and fixed slots on the test examples; the chosen gate's paired changes
    of cold and warm HR@10 against the calibrated list (bootstrap over the examples of each part)."""
    lists = TopLists.of(ranking)
    cold = ranking.target_shown
    hits = {}
    rows = []
    gates = [("calibrated, no gate", ColdSlots()), ("chosen on validation", chosen),
             *[(f"{m} fixed slot{'s' if m > 1 else ''}{', exclusive' if only else ''}",
                ColdSlots(m, float("inf"), only)) for only in (False, True) for m in (1, 2, 3)]]
    for name, slots in gates:
        ranks = lists.ranks(slots)
        hits[name] = (ranks <= 10).astype(float)
        rows.append({"gate": name, **described(slots, spread),
                     "cold_hr10": float(hits[name][cold].mean()), "warm_hr10": float(hits[name][~cold].mean()),
                     "all_ndcg10": float(ranking_metrics(ranks)["NDCG@10"].mean())})
    change = hits["chosen on validation"] - hits["calibrated, no gate"]
    paired = {part: {"mean": float(change[mask].mean()),
                     "ci95": bootstrap_ci({"change": change[mask]}, BOOTSTRAP, 0)["change"]}
              for part, mask in (("cold", cold), ("warm", ~cold))}
    return {"chosen": chosen.to_meta(), "rows": rows, "chosen_vs_calibrated": paired}


def gate_lines(gate: dict) -> list[str]:
    paired = gate["chosen_vs_calibrated"]
    return [f"Cold slots (fitted by {gate['fitted_by']} on validation: {gate['chosen']}); the chosen gate against the "
            "calibrated list on the same examples: cold HR@10 "
            f"{paired['cold']['mean']:+.4f} [{paired['cold']['ci95'][0]:+.4f}, {paired['cold']['ci95'][1]:+.4f}], "
            f"warm HR@10 {paired['warm']['mean']:+.4f} [{paired['warm']['ci95'][0]:+.4f}, "
            f"{paired['warm']['ci95'][1]:+.4f}] (95% bootstrap, {BOOTSTRAP} resamples).", "",
            "| gate | max slots | margin (sd) | exclusive | cold HR@10 | warm HR@10 | all NDCG@10 |",
            "|---|---|---|---|---|---|---|",
            *[f"| {r['gate']} | {r['max_slots']} | "
              + ("any" if r["margin_sd"] is None else f"{r['margin_sd']:.2f}")
              + f" | {'yes' if r['exclusive'] else 'no'} | {r['cold_hr10']:.4f} | {r['warm_hr10']:.4f} "
              f"| {r['all_ndcg10']:.4f} |" for r in gate["rows"]],
            ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", help="a dataset with a finished cold-items table")
    parser.add_argument("--table", type=Path, action="append",
                        help="a finished cold-items table folder (repeat to compare; the first is the reference); "
                             "default the one `reasonrec train-table` writes")
    parser.add_argument("--warm-floor", type=float, default=0.94,
                        help="share of SASRec+'s warm HR@10 the floor point keeps (the issue's 94%%)")
    parser.add_argument("--pairs", action="store_true",
                        help="the tables come in (reference, candidate) pairs, e.g. one pair per seed; each "
                             "candidate is compared with its own reference (default: every table with the first)")
    parser.add_argument("--name", default="", help="suffix of the report's name (bench_cold_tradeoff_<dataset>-<name>)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tables = args.table or [table_dir(args.dataset, PROTOCOL)]
    if args.pairs and len(tables) % 2:
        parser.error("--pairs needs an even number of --table")
    curves = [curve(args.dataset, table, args.warm_floor) for table in tables]
    metas = [c.pop("meta") for c in curves]
    for c, meta in zip(curves, metas, strict=True):
        c["settings_apart"] = settings_apart(meta, metas[0])  # the first table's: none
    for index, other in enumerate(curves):
        reference = curves[index - 1] if args.pairs else curves[0]
        if (args.pairs and index % 2 == 0) or other is reference:
            continue
        gain = other["_cold_hits"].astype(float) - reference["_cold_hits"].astype(float)
        other["reference"] = reference["table"]
        other["cold_gain_at_floor"] = {"mean": float(gain.mean()),
                                       "ci95": bootstrap_ci({"gain": gain}, BOOTSTRAP, 0)["gain"]}
    variant = f"{args.dataset}-{args.name}" if args.name else args.dataset
    report = Report("cold_tradeoff", f"Cold against warm items: the content offset of the {args.dataset} table"
                    + ("s" if len(curves) > 1 else ""), variant=variant)
    report.data = {"dataset": args.dataset, "protocol": PROTOCOL, "warm_floor_share": args.warm_floor,
                   "bootstrap": {"resamples": BOOTSTRAP, "seed": 0},
                   "tables": [{k: v for k, v in c.items() if not k.startswith("_")} for c in curves]}
    report.lines = [
        f"Summary: each table at the warm floor (warm HR@10 >= {args.warm_floor:.0%} of the all-cold-last level), "
        "and the best all-items NDCG@10 along its offsets.", "",
        "| table | settings apart from the first | cold HR@10 at the floor | warm HR@10 | "
        "cold gain over its reference [95% CI] | best all NDCG@10 | gate: cold HR@10 | gate: warm HR@10 |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {c['table']} | {c['settings_apart'] or '-'} | {c['at_floor']['cold_hr10']:.4f} "
          f"| {c['at_floor']['warm_hr10']:.4f} | "
          + (f"{c['cold_gain_at_floor']['mean']:+.4f} [{c['cold_gain_at_floor']['ci95'][0]:+.4f}, "
             f"{c['cold_gain_at_floor']['ci95'][1]:+.4f}] vs {c['reference']}" if "reference" in c else "-")
          + f" | {max(r['all_ndcg10'] for r in c['rows']):.4f} | {c['gate']['rows'][1]['cold_hr10']:.4f} "
          f"| {c['gate']['rows'][1]['warm_hr10']:.4f} |" for c in curves], ""]
    for c in curves:
        at = c["at_floor"]
        gain = c.get("cold_gain_at_floor")
        report.lines += [
            f"## Table `{c['table']}`", "",
            f"Settings apart from the first table: {c['settings_apart'] or 'none'}; g calibrated on validation: "
            f"{c['calibration']}. Test split of {PROTOCOL}: {c['test_examples']} examples, {c['cold_targets']} with a "
            f"cold target. Offset added to the bias of every content-served item, in standard deviations "
            f"({c['score_sd']:.3f}) of the warm rows' scores; 0 = as shipped.", "",
            f"At the warm floor (warm HR@10 >= {c['warm_floor']:.4f}, {args.warm_floor:.0%} of the all-cold-last "
            f"level): offset {at['offset_sd']:+.2f} sd, cold HR@10 {at['cold_hr10']:.4f}, warm {at['warm_hr10']:.4f}"
            + (f"; cold gain over `{c.get('reference')}` {gain['mean']:+.4f} [{gain['ci95'][0]:+.4f}, "
               f"{gain['ci95'][1]:+.4f}] (paired, {BOOTSTRAP} resamples of the cold-target users)" if gain else "")
            + ".", "",
            "| offset (sd) | cold HR@10 | warm HR@10 | all NDCG@10 |", "|---|---|---|---|",
            *[f"| {r['offset_sd']:+.2f} | {r['cold_hr10']:.4f} | {r['warm_hr10']:.4f} | {r['all_ndcg10']:.4f} |"
              for r in c["rows"]], "", *gate_lines(c["gate"])]
    for path in report.write():
        print(path)
    print("\n".join(report.lines))


if __name__ == "__main__":
    main()
