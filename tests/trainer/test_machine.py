"""The machine line of the reports names the CPU model, read from /proc/cpuinfo, with a fallback off Linux."""

from pathlib import Path

import pytest

from trainer import machine


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu\n")
    monkeypatch.setattr(machine, "_CPUINFO", cpuinfo)
    assert machine.cpu_model() == "AMD EPYC 9B45"
    assert "AMD EPYC 9B45, " in machine.machine_line()
    assert "torch threads" in machine.machine_line()


def test_cpu_model_falls_back_without_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert machine.cpu_model() == "unknown CPU"


def test_shown_paths_are_relative_to_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert machine.shown_path(tmp_path / "artifacts" / "tables" / "t") == "artifacts/tables/t"
    assert machine.shown_path(Path("/elsewhere/x")) == "/elsewhere/x"  # outside the checkout: shown as it is


def test_no_report_in_docs_names_a_path_of_the_machine_it_ran_on() -> None:
    results = Path(__file__).parents[2] / "docs" / "results"
    machine_paths = ("/work/", "/tmp/", "/root/", "/home/", "/var/folders/")
    found = [f"{report.relative_to(results)}: {marker}" for report in sorted(results.rglob("*"))
             if report.suffix in (".md", ".json") for marker in machine_paths if marker in report.read_text()]
    assert not found, found
