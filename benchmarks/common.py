"""What the benchmark scripts share: real user prompts from the load-test request file, the machine description,
percentiles, and writing a report pair docs/results/bench_<name>.{md,json} that names its command and machine.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.gateway import busy_note, machine
from loadtests.requests import default_path, write_requests
from model.prompts import HistoryLine, user_prompt
from trainer.data import load_dataset

RESULTS = Path("docs/results")


def request_bodies(dataset: str = "ml-100k", count: int = 3000) -> list[dict[str, Any]]:
    """The load-test request file (made if missing): /recommend bodies of real histories."""
    path = default_path(dataset)
    if not path.exists():
        write_requests(dataset, path, count)
    return json.loads(path.read_text())


def user_prompts(n: int, dataset: str = "ml-100k", offset: int = 0) -> list[str]:
    """The reasoning prompts the gateway would build for `n` requests of the request file."""
    catalog = load_dataset(dataset).catalog
    prompts = []
    for body in request_bodies(dataset)[offset : offset + n]:
        lines = [HistoryLine.of_item(catalog[e["item_id"]], e.get("rating"), e.get("timestamp"))
                 for e in body["history"]]
        prompts.append(user_prompt(lines))
    return prompts


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


class Report:
    """Collects a benchmark's setup and figures; `write` puts bench_<name>.md/.json (bench_<name>_<variant>.* for a
    benchmark run once per dataset, say) under docs/results."""

    def __init__(self, name: str, title: str, variant: str = "") -> None:
        self.name = name
        self.stem = f"bench_{name}_{variant}" if variant else f"bench_{name}"
        self.title = title
        self.start = machine()
        self.command = "python -m benchmarks." + name + " " + " ".join(sys.argv[1:])
        self.lines: list[str] = []
        self.data: dict[str, Any] = {}

    def write(self, out_dir: Path = RESULTS) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        end = machine()
        meta = {"command": self.command, "machine_start": self.start, "machine_end": end,
                "busy_note": busy_note(self.start)}
        md, js = out_dir / f"{self.stem}.md", out_dir / f"{self.stem}.json"
        js.write_text(json.dumps({"meta": meta, **self.data}, indent=1))
        m = self.start
        head = [
            f"# {self.title}", "",
            f"Made by `{self.command}` on {m['date_utc']} UTC (finished {end['date_utc']}); {m['cores']} x {m['cpu']}, "
            f"{m['memory_gb']} GB RAM, no GPU, Python {m['python']}. {meta['busy_note']}", "",
        ]
        md.write_text("\n".join(head + self.lines + ["", f"All figures: `{js.name}`.", ""]))
        return [md, js]
