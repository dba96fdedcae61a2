"""bench.common: how busy the cores are before a section starts."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.common import Section, cpu_busy, cpu_ticks, steal_share, wait_for_quiet


def test_cpu_busy_is_a_share_of_all_cores() -> None:
    busy = cpu_busy(0.2)
    assert math.isnan(busy) or 0.0 <= busy <= 1.0


def test_wait_for_quiet_returns_at_once_when_the_bar_is_met_and_gives_up_otherwise() -> None:
    assert wait_for_quiet(busy_below=1.01, settle_s=0.1).startswith("idle cores (")
    found = wait_for_quiet(busy_below=-1.0, settle_s=0.1, max_wait_s=0.0)
    assert found.startswith("busy cores (") and "after 0 s of waiting" in found


def test_the_section_header_says_how_busy_the_cores_were() -> None:
    section = Section("training", "4. Training overhead", seconds=12.0, quiet="idle cores (3% …)")
    assert "_Section wall time: 12 s. Started on idle cores (3% …)._" in section.markdown()


def test_the_section_header_says_how_much_the_hypervisor_took() -> None:
    section = Section("peers", "5. Peers", seconds=300.0, quiet="idle cores (0% …)", steal=0.0412)
    header = section.markdown().splitlines()[2]
    assert header.endswith("Steal (the hypervisor running others on these cores): 4.1%._")


def test_steal_is_the_stolen_share_of_all_ticks_between_two_readings(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 10 0 0 40 7 0\ncpu0 1 2 3\n")
    before = cpu_ticks(stat)
    assert before == (1000, 40)  # guest time is already inside user: not counted twice
    stat.write_text("cpu  200 0 100 1500 10 0 0 190 9 0\n")
    assert steal_share(before, cpu_ticks(stat)) == 150 / 1000
    assert cpu_ticks(tmp_path / "missing") is None
    assert steal_share(None, before) is None and steal_share(before, before) is None
    real = cpu_ticks()
    assert real is None or (real[0] > 0 and 0 <= real[1] <= real[0])


def test_the_run_and_each_section_get_their_own_steal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.__main__ as bench_main

    # (all, steal) ticks: the run's start, each section's start and end, the run's end.
    readings = iter([(0, 0), (100, 10), (200, 30), (300, 40), (400, 90), (1000, 100)])
    monkeypatch.setattr(bench_main, "cpu_ticks", lambda: next(readings))
    monkeypatch.setattr(bench_main, "wait_for_quiet", lambda: "idle cores (test)")
    section_module = SimpleNamespace(run=lambda section, quick: None)
    monkeypatch.setattr(
        bench_main, "importlib", SimpleNamespace(import_module=lambda name: section_module)
    )
    output = tmp_path / "RESULTS.md"
    argv = ["--only", "serving", "--only", "training", "--output", str(output)]
    assert bench_main.main(argv) == 0
    text = output.read_text()
    assert "hypervisor ran others; each section's is in its header): 10.0%" in text  # 100/1000
    assert "Steal (the hypervisor running others on these cores): 20.0%._" in text  # 20/100
    assert "Steal (the hypervisor running others on these cores): 50.0%._" in text  # 50/100
