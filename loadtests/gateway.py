"""A gateway process for load tests and benchmarks: `reasonrec serve --no-build` on a free loopback port with
the given `REASONREC_*` settings, its log in a file, ready once /readyz answers 200; and a description of the
machine (cores, memory, load) for the reports, since figures from a busy machine must say so.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from trainer.machine import cpu_model

READY_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """`with Gateway(settings, log_path) as gw:` starts the service and stops it on exit."""

    def __init__(self, settings: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        # the caller's service settings do not leak in; where artifacts live (not a setting) does
        env = {k: v for k, v in os.environ.items() if not k.startswith("REASONREC_") or k == "REASONREC_ARTIFACTS"}
        env.update({f"REASONREC_{k.upper()}": v for k, v in self.settings.items()})
        env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "trainer.cli", "serve", "--no-build", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise RuntimeError(f"the gateway exited ({code}); see {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the gateway was not ready after {READY_TIMEOUT_S:.0f} s; see {self.log_path}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def readiness(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/readyz", timeout=10).json()


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, load averages and the busiest other processes now (call it before starting)."""
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    load1, load5, load15 = os.getloadavg()
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "cpu": cpu_model(),
        "memory_gb": round(mem_kb / 2**20, 1), "loadavg_1_5_15": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "cpu_busy_share_2s": cpu_busy_share(), "python": platform.python_version(),
        "other_busy_processes": busy_processes(),
    }


def cpu_busy_share(seconds: float = 2.0) -> float:
    """Share of all cores' time spent busy over the next `seconds` (from /proc/stat): what the load average,
    a trailing mean, says only late (e.g. right after other jobs were paused)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(1 - (idle1 - idle0) / max(total1 - total0, 1), 3)


def busy_processes(limit: int = 4) -> list[str]:
    """The running processes using the most CPU (ps: share of their lifetime), other than this one; stopped
    ones (state T, e.g. paused for the measurement) are left out."""
    out = subprocess.run(["ps", "-eo", "pid,stat,pcpu,args", "--sort=-pcpu", "--no-headers"], capture_output=True,
                         text=True, check=False).stdout.splitlines()
    rows = [line.split(None, 3) for line in out]
    here = f"{Path.cwd()}/"  # command lines as a checkout shows them: no path of this machine in a report
    return [f"{row[2]}% {row[3].replace(here, '')[:90]}" for row in rows
            if len(row) == 4 and int(row[0]) != os.getpid() and not row[1].startswith("T")
            and float(row[2]) >= 10][:limit]


def busy_note(start: dict[str, Any]) -> str:
    """Whether other work shared the machine when a measurement started (more than a quarter of the CPU busy in
    the 2 s before it)."""
    busy, cores = start["cpu_busy_share_2s"], start["cores"] or 1
    if busy > 0.25:
        others = "; ".join(start["other_busy_processes"]) or "not identified"
        return (f"The machine was busy: {busy:.0%} of {cores} cores in use just before the measurement started "
                f"(other jobs: {others}). Absolute figures are pessimistic; compare ratios taken within the same run.")
    return (f"The machine was quiet when the measurement started ({busy:.0%} of {cores} cores busy; other jobs, if "
            f"any, were stopped: {'; '.join(start['other_busy_processes']) or 'none running'}).")
