"""How cold items trade against warm ones in the item table (docs/design.md section 2): the calibrated content map
`g` of a finished `reasonrec train-table` artifact, with an extra offset added to the bias of every item served by
`g(c)` alone (a cold-items split's cold items), on the split's test examples: cold and warm HR@10 at each offset.

Offsets are in standard deviations of the warm rows' scores; 0 is the calibration the table ships with
(`trainer.train.table.content.calibrate`, chosen on validation), large negative offsets put every cold item last.
The curve is what bounds the cold target: how much warm HR@10 each step of cold HR@10 costs.

    python -m benchmarks.cold_tradeoff --dataset ml-100k   # -> docs/results/bench_cold_tradeoff_ml-100k.{md,json}
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Report
from indexer.core.paths import table_dir
from trainer.protocol.metrics import ranking_metrics
from trainer.train.table.served import load_served_table

PROTOCOL = "cold-items"
OFFSETS = (-100.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", help="a dataset with a finished cold-items table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    served = load_served_table(args.dataset, PROTOCOL)
    artifact, ranking = served.artifact, served.ranking(served.split.test)
    spread = ranking.score_sd()
    cold = ranking.target_shown
    rows = []
    for offset in OFFSETS:
        ranks = ranking.ranks(1.0, offset * spread)
        hits = ranks <= 10
        rows.append({"offset_sd": offset, "cold_hr10": float(hits[cold].mean()), "warm_hr10": float(hits[~cold].mean()),
                     "all_ndcg10": float(ranking_metrics(ranks)["NDCG@10"].mean())})
    report = Report("cold_tradeoff", f"Cold against warm items: the content offset of the {args.dataset} table",
                    variant=args.dataset)
    report.data = {"dataset": args.dataset, "protocol": PROTOCOL, "test_examples": len(cold),
                   "cold_targets": int(cold.sum()), "score_sd": spread,
                   "calibration": artifact.meta.get("calibration"), "rows": rows}
    report.lines = [
        f"Table `{table_dir(args.dataset, PROTOCOL).name}` (g calibrated on validation: "
        f"{artifact.meta.get('calibration')}); test split of {PROTOCOL}: {len(cold)} examples, {int(cold.sum())} "
        f"with a cold target. Offset added to the bias of every content-served item, in standard deviations "
        f"({spread:.3f}) of the warm rows' scores; 0 = as shipped.", "",
        "| offset (sd) | cold HR@10 | warm HR@10 | all NDCG@10 |", "|---|---|---|---|",
        *[f"| {r['offset_sd']:+.1f} | {r['cold_hr10']:.4f} | {r['warm_hr10']:.4f} | {r['all_ndcg10']:.4f} |"
          for r in rows],
    ]
    for path in report.write():
        print(path)
    print("\n".join(report.lines))


if __name__ == "__main__":
    main()
