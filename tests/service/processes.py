"""Gateway processes for the multi-process tests: a real `uvicorn` process per gateway, configured by environment
(`REASONREC_*`), started, probed, stopped (SIGTERM) or killed (SIGKILL) like a pod.

`GatewayProcess(env, log)` runs `uvicorn service.main:create_app --factory`; `command=FAULT_GATEWAY` runs
`tests/service/fault_gateway.py` instead (the same app with an engine fault injected). Both run from the repo
root, so they import this checkout's code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from private_redis import free_port
from service_helpers import ADMIN_TOKEN, SHARED_REDIS, history

REPO = Path(__file__).parents[2]
FAST_TEST_ENV = {  # tiny_settings' values
    "REASONREC_MODEL": "tiny", "REASONREC_DEFAULT_REASONING_TOKENS": "8", "REASONREC_MAX_REASONING_TOKENS": "32",
    "REASONREC_RATING_TOKENS_PER_TAG": "4", "REASONREC_DEFAULT_ARTIFACTS": "false",
}
UVICORN = ("-m", "uvicorn", "service.main:create_app", "--factory", "--no-access-log")
FAULT_GATEWAY = ("-m", "tests.service.fault_gateway")


class GatewayProcess:
    """One gateway process on a free loopback port (a new one at every start)."""

    def __init__(self, env: dict[str, str], log: Path, command: tuple[str, ...] = UVICORN, *,
                 tiny: bool = True) -> None:
        """`tiny=False`: the environment as given over this process's, without the fast tests' tiny-model settings."""
        self.env = {**os.environ, **(FAST_TEST_ENV if tiny else {}), **env}
        self.log = log
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> GatewayProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = [sys.executable, *self.command, "--port", str(port)]
        env = {**self.env, "REASONREC_PORT": str(port)}
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds until /readyz answers 200; fails with the end of the log if the process dies or times out."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops a pod; fails if it does not stop within 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"the gateway did not stop on SIGTERM: {self.log.read_text()[-2000:]}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer takes the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def item_ids(self) -> set[str]:
        """Every item the gateway serves (the direct ranker over the whole small catalog)."""
        body = {"history": history("2"), "k": 100, "ranker": "direct", "exclude_history": False}
        return {i["item_id"] for i in httpx.post(self.url + "/recommend", json=body, timeout=30).json()["items"]}


def replica(index_dir: Path, redis_prefix: str, log: Path) -> GatewayProcess:
    """One replica of a fleet: a gateway process with catalog sync on the shared test Redis."""
    return GatewayProcess({
        "REASONREC_INDEX_DIR": str(index_dir), "REASONREC_REDIS_URL": SHARED_REDIS,
        "REASONREC_CACHE_PREFIX": redis_prefix, "REASONREC_CATALOG_SYNC": "true", "REASONREC_ADMIN_TOKEN": ADMIN_TOKEN,
    }, log)
