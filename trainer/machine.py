"""The machine line that every training and evaluation report names, and the paths a report may show.

Reports in `docs/results/` were made on more than one kind of 2-core machine (Intel Xeon and AMD EPYC), so the line
names the CPU model next to the cores, torch threads and accelerator: timings are only comparable on the same one.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows, else 'unknown CPU'."""
    if _CPUINFO.is_file():
        for line in _CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """E.g. 'x86_64 AMD EPYC, 2 cores, 2 torch threads, no GPU; Python 3.11.7, torch 2.13.0+cpu'."""
    import torch  # here, not at the top: the load-test driver imports `cpu_model` and needs no torch

    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{accelerator}; Python {platform.python_version()}, torch {torch.__version__}")


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it (reports stay valid in any checkout)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
