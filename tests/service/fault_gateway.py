"""The gateway as `reasonrec serve` runs it (settings from `REASONREC_*`, the engine loaded by the service), with
one fault injected at the engine: `REASONREC_FAULT_ENGINE_DELAY_S=N` makes every engine call take N more seconds,
i.e. an engine that hangs (tests/service/test_fault_injection.py). Everything else is the real service.

    python -m tests.service.fault_gateway --port 8123      # from the repo root
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # service_helpers

from service_helpers import FaultyEngine  # noqa: E402

import service.state  # noqa: E402
from service.main import serve  # noqa: E402
from service.settings import Settings  # noqa: E402

DELAY_ENV = "REASONREC_FAULT_ENGINE_DELAY_S"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    load_real = service.startup.load_transformers_engine

    def load_hanging(*load_args: object, **load_kwargs: object) -> FaultyEngine:
        engine = FaultyEngine(load_real(*load_args, **load_kwargs))
        engine.delay_s = float(os.environ.get(DELAY_ENV, "0"))
        return engine

    service.startup.load_transformers_engine = load_hanging  # behind the micro-batcher, as the real engine
    serve(Settings(port=args.port))


if __name__ == "__main__":
    main()
