"""Durable file writes for index versions: fsync files and folders, replace small files atomically.

A rename is only durable once the folder that holds it is fsynced, and a file's bytes only once the file is;
these helpers make "written" mean "survives a crash" (POSIX; folder fsync is skipped where unsupported).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; its renames need no folder fsync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` and fsync it (not atomic: use inside a folder that is renamed into place)."""
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def replace_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`: a reader sees the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_text(tmp, text)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def replace_with(path: Path, write: Callable[[Path], None]) -> None:
    """Atomically replace `path` with what `write` writes to the temporary path it is given (e.g. a weights file),
    readable by every user (safetensors writes 0600: a container's non-root user could not read a shipped model)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.chmod(0o644)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
