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
