"""The training report of a contrastive LoRA run (`reasonrec train-cl` writes it when the run ends): validation
NDCG@10/HR@10 and loss against training time as a PNG, training speed (samples/s) and peak memory, with the
command, data, split, seed and machine, as markdown + JSON in `docs/results/cl/` (stem `<dataset>-<protocol>-training`).
It follows no paper: its metrics are those of `trainer.protocol.metrics` (full ranking, trec_eval's conventions).
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.prior import PRIOR_WEIGHTS
from model.engines.loading import ADAPTER_META
from trainer.train.contrastive.config import describe_recipe


def write_training_report(adapter: Path, out_dir: Path, command: str, name: str | None = None) -> list[Path]:
    """Markdown, JSON and PNG of the run stored in `adapter`, named `name` (default
    `<dataset>-<protocol>-training`); returns their paths."""
    meta = json.loads((adapter / ADAPTER_META).read_text(encoding="utf-8"))
    stem = name or f"{meta['data']['dataset']}-{meta['config']['protocol']}-training"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    report = {"command": command, "adapter": str(adapter), **meta}
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(_markdown(report, paths[2].name), encoding="utf-8")
    _plot(meta["curve"], paths[2])
    return paths


def _markdown(report: dict, chart: str) -> str:
    config, curve = report["config"], report["curve"]
    last = curve[-1] if curve else {}
    lines = [
        f"# Contrastive LoRA on {report['data']['dataset']}, {report['split']['protocol']}: training run", "",
        f"- **command**: `{report['command']}`",
        f"- **adapter**: `{report['adapter']}` (status {report['status']}; best validation step "
        f"{report['best_step']} of {report['steps']})",
        f"- **base model**: {report['base_model']['model_id']} (weights {report['base_model']['weights_hash']}, "
        f"templates {report['template_version']})",
        f"- **data**: {report['data']['users']} users, {report['data']['items']} items, "
        f"{report['data']['interactions']} interactions; split {report['split']['protocol']}",
        f"- **recipe**: LoRA r {config['lora_r']} alpha {config['lora_alpha']} on {', '.join(config['lora_modules'])}"
        f" ({'top ' + str(config['lora_top_layers']) + ' layers' if config['lora_top_layers'] else 'all layers'}); "
        f"{config['batch_size']} users/step, temperature {config['temperature']}, lr {config['lr']} after "
        f"{config['warmup_steps']} warm-up steps, {config['mixed_precision']} mixed precision; "
        + describe_recipe(config),
        f"- **validation**: {config['valid_users']} seeded validation users (seed {config['seed']}), full ranking "
        "against every training item re-encoded with the model of that step (step 0: the base model's index or "
        "vectors), centered cosine, history excluded",
        f"- **speed**: {last.get('samples_per_s', 0):.2f} samples/s over {report['train_seconds']:.0f} s of training;"
        f" peak resident memory {max((p['max_rss_gib'] for p in curve), default=0):.2f} GiB; re-encoding and "
        f"validation took {sum(p['validation_seconds'] for p in curve):.0f} s more",
        f"- **machine**: {report['machine']}; **date**: {report['date']}", "",
        "*top-10 popularity*: median popularity rank (1 = most interacted item of the training split) of the items "
        "the model puts in the validation users' top 10, then the number of distinct items among them; the targets' "
        "median is " + (f"{curve[0]['target_median_popularity_rank']:.0f}" if curve else "not recorded") + ".", "",
        "*with popularity prior*: NDCG@10 / HR@10 when each item's score gets w x log(1 + its training count), for "
        "the best w of " + ", ".join(map(str, PRIOR_WEIGHTS)) + " (chosen on these same validation users).", "",
        "| step | training minutes | loss | valid NDCG@10 | valid HR@10 | samples/s | top-10 popularity "
        "| with popularity prior (w) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['step']} | {p['seconds'] / 60:.1f} | {_number(p['loss'])} | {p['NDCG@10']:.4f} | "
              f"{p['HR@10']:.4f} | {p['samples_per_s']:.2f} | {_popularity(p)} | "
              f"{_prior(p)} |" for p in curve]
    lines += ["", f"![validation NDCG@10 against training time]({chart})", ""]
    return "\n".join(lines)


def _popularity(point: dict) -> str:
    return f"{point['top10_median_popularity_rank']:.0f} / {point['top10_distinct_items']} items"


def _prior(point: dict) -> str:
    best = point["best_popularity_prior"]
    return f"{best['NDCG@10']:.4f} / {best['HR@10']:.4f} ({best['weight']})"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["seconds"] / 60 for p in curve]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(minutes, [p["NDCG@10"] for p in curve], marker="o", label="valid NDCG@10")
    left.plot(minutes, [p["HR@10"] for p in curve], marker="s", label="valid HR@10")
    left.set_xlabel("training time (minutes)")
    left.set_ylabel("validation metric")
    right = left.twinx()
    trained = [p for p in curve if p["loss"] is not None]
    right.plot([p["seconds"] / 60 for p in trained], [p["loss"] for p in trained], color="grey", linestyle="--",
               label="train loss (mean since the previous point)")
    right.set_ylabel("training loss")
    left.legend(loc="upper left")
    right.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
