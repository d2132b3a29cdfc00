"""The reward curve of a finished GRPO run (`reasonrec experiment grpo-curve`): from the curves its manifest keeps
(TRL's log per step, `trainer.train.grpo.run`), a plot of the mean group reward and of each reward's mean per step
with a moving average, and whether the reward rose beyond its noise: the mean of the last `window` steps minus
that of the first `window`, with a 95% bootstrap interval over steps (each window resampled on its own). Writes
`<name>.{md,json,png}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.engines.loading import ADAPTER_META
from trainer.machine import shown_path
from trainer.protocol.metrics import percentile_interval

REWARD_PREFIX = "rewards/"


@dataclass
class GrpoCurveConfig:
    """What `reasonrec experiment grpo-curve` reads and writes."""

    adapter: Path
    """A finished `reasonrec train-recpo` / `train-rating-grpo` adapter folder."""
    name: str = ""
    """Report file name without suffix; default `<adapter folder name>-curve`."""
    window: int = 10
    """Steps at each end of the run whose mean rewards are compared."""
    bootstrap: int = 2000
    """Bootstrap resamples of steps for the interval."""
    out_dir: Path = Path("docs/results")
    """Folder of the report."""

    def __post_init__(self) -> None:
        self.adapter, self.out_dir = Path(self.adapter), Path(self.out_dir)
        if self.window < 2 or self.bootstrap < 1:
            raise ValueError(f"--window must be >= 2 and --bootstrap >= 1, got {self.window} and {self.bootstrap}")


def step_rewards(curves: list[dict]) -> dict[str, np.ndarray]:
    """Per step: "reward" (the weighted group mean TRL optimizes) and each reward function's mean."""
    logged = [c for c in curves if "reward" in c]
    names = ["reward"] + sorted({k for c in logged for k in c if k.startswith(REWARD_PREFIX) and k.endswith("/mean")})
    return {name: np.array([c.get(name, np.nan) for c in logged], dtype=float) for name in names}


def rise(values: np.ndarray, window: int, bootstrap: int, seed: int = 0) -> dict:
    """Mean of the last `window` values minus the first `window`'s, with its bootstrap interval."""
    if len(values) < 2 * window:
        raise ValueError(f"the run logged {len(values)} steps: fewer than two windows of {window}")
    first, last = values[:window], values[-window:]
    rng = np.random.default_rng(seed)
    samples = (last[rng.integers(0, window, (bootstrap, window))].mean(axis=1)
               - first[rng.integers(0, window, (bootstrap, window))].mean(axis=1))
    return {"first": float(first.mean()), "last": float(last.mean()), "rise": float(last.mean() - first.mean()),
            "ci95": list(percentile_interval(samples))}


def grpo_curve(config: GrpoCurveConfig, command: str = "") -> list[Path]:
    """Write the report of the run in `config.adapter`; returns its paths (.md, .json, .png)."""
    path = config.adapter / ADAPTER_META
    if not path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_META} in {config.adapter}: is it a finished GRPO run?")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "curves" not in manifest:
        raise ValueError(f"{path} holds no training curves: not a GRPO run's manifest")
    series = step_rewards(manifest["curves"])
    report = {
        "title": f"{manifest.get('job', 'GRPO')}: the reward over {len(series['reward'])} steps",
        "command": command, "adapter": shown_path(config.adapter), "job": manifest.get("job"),
        "data": manifest.get("data"), "config": manifest.get("config"), "machine": manifest.get("machine"),
        "date": manifest.get("date"), "steps": len(series["reward"]), "window": config.window,
        "rise": {name: rise(values, config.window, config.bootstrap) for name, values in series.items()},
        "series": {name: values.tolist() for name, values in series.items()},
    }
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = config.out_dir / (config.name or f"{config.adapter.name}-curve")
    paths = [stem.with_suffix(".md"), stem.with_suffix(".json"), stem.with_suffix(".png")]
    paths[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[0].write_text(_markdown(report, paths[2].name), encoding="utf-8")
    _plot(series, config.window, report["title"], paths[2])
    return paths


def _markdown(report: dict, png: str) -> str:
    lines = [f"# {report['title']}", "",
             f"- **command**: `{report['command']}` on the run in `{report['adapter']}`",
             f"- **data**: {report['data']}", f"- **settings**: {report['config']}",
             f"- **machine**: {report['machine']}", f"- **finished**: {report['date']}", "",
             f"Mean per step of the first and last {report['window']} steps, and the rise with a 95% bootstrap "
             "interval over steps. `reward` is the weighted sum GRPO optimizes; the others are each reward "
             "function's mean.", "", "| reward | first | last | rise |", "|---|---|---|---|"]
    for name, r in report["rise"].items():
        lines.append(f"| {name} | {r['first']:.4f} | {r['last']:.4f} | {r['rise']:+.4f} "
                     f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] |")
    lines += ["", f"![reward curve]({png})", ""]
    return "\n".join(lines)


def _plot(series: dict[str, np.ndarray], window: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = series[name]
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, ".", alpha=0.5, label="per step")
        if len(values) >= window:
            moving = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], moving, "-", label=f"mean of {window}")
        ax.set_title(name.removeprefix(REWARD_PREFIX).removesuffix("/mean"), fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
