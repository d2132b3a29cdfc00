"""The reliability report: `make fuzz` and `make faults` record their figures here, and every record rewrites
docs/results/reliability.json (all sections) and docs/results/reliability.md (rendered from it).

A section ("fuzz", "faults") keeps the command that made it, the machine it ran on and when; a run replaces only
its own section, so the two targets can run at different times.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parents[2] / "docs" / "results"
JSON_FILE = RESULTS / "reliability.json"
MD_FILE = RESULTS / "reliability.md"
COMMAND_ENV = "REASONREC_RELIABILITY_COMMAND"  # the make target sets it; else the pytest command line


def machine() -> dict[str, Any]:
    """Where the figures come from: cores, CPU, memory, the load while they were taken."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory_kb / 2**20, 1),
        "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
        "redis_server": next((w.removeprefix("v=") for w in redis if w.startswith("v=")), "?"),
    }


def record(section: str, figures: dict[str, Any]) -> None:
    """Store `figures` as `section` (with command, machine and time) and rewrite both report files."""
    report = json.loads(JSON_FILE.read_text()) if JSON_FILE.exists() else {}
    report[section] = {
        "command": (os.environ.get(COMMAND_ENV)
                    or shlex.join([Path(sys.executable).name, "-m", "pytest", *sys.argv[1:]])),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "figures": figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    JSON_FILE.write_text(json.dumps(report, indent=1) + "\n")
    MD_FILE.write_text(render(report))


def _header(name: str, run: dict[str, Any]) -> list[str]:
    m = run["machine"]
    return [
        f"## {name}", "",
        f"`{run['command']}` on {run['date']}: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, load "
        f"{m['load_average_1m']} (1 min) when it ended, Python {m['python']}, redis-server {m['redis_server']}.", "",
    ]


def render_fuzz(run: dict[str, Any]) -> list[str]:
    f = run["figures"]
    lines = _header("Property-based API fuzzing (schemathesis)", run)
    lines += [
        f"**{f['cases']} generated requests, {f['server_errors']} server errors** in {f['seconds']} s: every "
        f"operation, positive and negative cases ({f['runs']} runs of up to {f['examples_per_run']} examples, "
        f"profile `{f['profile']}`). Checks on every answer: no 5xx, a documented status, the body matching its "
        "schema, the error envelope on every 4xx.", "",
        "| operation | requests | answers by status |", "|---|---|---|",
        *(f"| `{op}` | {sum(statuses.values())} | {', '.join(f'{s}: {n}' for s, n in statuses.items())} |"
          for op, statuses in f["operations"].items()), "",
    ]
    return lines


def render_faults(run: dict[str, Any]) -> list[str]:
    lines = _header("Fault injection (real processes)", run)
    lines += ["| fault | what was done | requests sent | failed | items lost | duplicated | other figures | target "
              "| met |", "|---|---|---|---|---|---|---|---|---|"]
    for s in run["figures"]["scenarios"]:
        other = "; ".join(f"{k} {v}" for k, v in s.get("other", {}).items())
        lines.append(f"| {s['fault']} | {s['what']} | {s['sent']} | {s['failed']} | {s.get('lost', '-')} "
                     f"| {s.get('duplicated', '-')} | {other} | {s['target']} | {'yes' if s['met'] else '**no**'} |")
    return [*lines, ""]


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Reliability: fuzzing and fault injection", "",
        "Written by `make fuzz` and `make faults` (tests/service/test_fuzz_api.py, "
        "tests/service/test_fault_injection.py); the JSON beside this file has the same figures. Each section "
        "names the command and machine that made it.", "",
    ]
    if "fuzz" in report:
        lines += render_fuzz(report["fuzz"])
    if "faults" in report:
        lines += render_faults(report["faults"])
    return "\n".join(lines)
