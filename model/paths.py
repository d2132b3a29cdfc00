"""Where reasonrec keeps its artifacts (converted models, indexes, adapters, reports).

One gitignored folder, `./artifacts` by default, moved with the environment variable `REASONREC_ARTIFACTS`.
"""

from __future__ import annotations

import os
from pathlib import Path


def artifacts_dir() -> Path:
    """The artifacts root: `$REASONREC_ARTIFACTS` if set, else `./artifacts` (created on demand by writers)."""
    return Path(os.environ.get("REASONREC_ARTIFACTS", "artifacts")).expanduser().resolve()
