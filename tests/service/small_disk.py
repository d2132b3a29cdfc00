"""A gateway whose index lives on a small, almost full tmpfs: the "disk full while persisting" fault.

The gateway runs inside a private mount namespace (`unshare -rm`: no root needed where user namespaces are
allowed) in which a tmpfs of `size_kib` is mounted, the index copied onto it, and a ballast file leaves
`free_kib` free. A shell loop restarts the gateway whenever it dies, so a test can `kill -9` it and watch the
restart load whatever the full disk holds. The tmpfs vanishes with the namespace when `close` ends the loop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from private_redis import free_port
from processes import FAST_TEST_ENV, REPO

SCRIPT = r"""
set -e
mount -t tmpfs -o size="${DISK_KIB}k" tmpfs "$DISK"
cp -a "$SOURCE" "$DISK/index"
used=$(du -sk "$DISK" | cut -f1)
dd if=/dev/zero of="$DISK/ballast" bs=1k count=$((DISK_KIB - used - FREE_KIB)) status=none 2>/dev/null || true
echo "tmpfs: $(df -k "$DISK" | tail -1 | awk '{print $2 " KiB, " $3 " used, " $4 " free"}')"
while [ ! -e "$STOP" ]; do
  "$PYTHON" -m uvicorn service.main:create_app --factory --no-access-log --port "$PORT" &
  echo $! > "$PIDFILE"
  wait $! || true
done
"""


class SmallDisk:
    """The gateway of the module docstring; `url` serves it, `kill_gateway` kill -9s the current process."""

    def __init__(self, index: Path, folder: Path, env: dict[str, str], size_kib: int = 256, free_kib: int = 12):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "small-disk.log"
        self.stop_file, self.pid_file = folder / "stop", folder / "gateway.pid"
        (folder / "disk").mkdir()
        self.env = {
            **os.environ, **FAST_TEST_ENV, **env, "REASONREC_INDEX_DIR": str(folder / "disk" / "index"),
            "DISK": str(folder / "disk"), "DISK_KIB": str(size_kib), "FREE_KIB": str(free_kib), "SOURCE": str(index),
            "STOP": str(self.stop_file), "PIDFILE": str(self.pid_file), "PORT": str(self.port),
            "PYTHON": sys.executable,
        }
        self.shell: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """Why a private tmpfs cannot be mounted here (None: it can)."""
        if shutil.which("unshare") is None:
            return "no unshare binary"
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                               capture_output=True, text=True, check=False)
        return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"

    def start(self) -> SmallDisk:
        self.shell = subprocess.Popen(["unshare", "-rm", "sh", "-c", SCRIPT], cwd=REPO, env=self.env,
                                      stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.shell is not None and self.shell.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.log.read_text()[-3000:])

    def gateway_pid(self) -> int:
        return int(self.pid_file.read_text())

    def kill_gateway(self) -> None:
        """kill -9 the gateway; the loop starts a new one on the same port and the same (full) disk."""
        pid = self.gateway_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.pid_file.exists() and self.gateway_pid() == pid:
            assert time.monotonic() < deadline, "the gateway was not restarted"
            time.sleep(0.05)

    def close(self) -> None:
        self.stop_file.touch()
        if self.shell is not None and self.shell.poll() is None:
            os.killpg(self.shell.pid, signal.SIGKILL)  # the shell and its gateway: a session of their own
            self.shell.wait(timeout=30)

    def disk_report(self) -> str:
        return next((line for line in self.log.read_text().splitlines() if line.startswith("tmpfs:")), "")
