"""`reasonrec serve --build-only`: builds the index the gateway would serve (the one `make loadtest` and the
gateway benchmark then start against with `--no-build`) and exits without listening."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main


def test_build_only_builds_the_served_index_and_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REASONREC_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("REASONREC_MODEL", "tiny")
    assert main(["serve", "--dataset", "ml-100k", "--build-only"]) == 0
    ready = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ready to serve: index at ")]
    [index_dir] = [Path(line.removeprefix("ready to serve: index at ")) for line in ready]
    assert index_dir.is_relative_to(tmp_path) and (index_dir / "CURRENT").is_file()


def test_build_only_and_no_build_exclude_each_other() -> None:
    with pytest.raises(SystemExit, match="exclude each other"):
        main(["serve", "--build-only", "--no-build"])
