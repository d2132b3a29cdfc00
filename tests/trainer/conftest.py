"""Puts this folder on the import path (pytest prepends a conftest's folder), so every trainer test can
import `trainer_helpers`; and `module_artifacts`, a temporary artifacts root for a whole module."""

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`REASONREC_ARTIFACTS` set to a temporary folder for a whole test module: the caches, tables and indexes its
    jobs write go there, not to the checkout's artifacts."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("artifacts")
        patch.setenv("REASONREC_ARTIFACTS", str(root))
        yield root

