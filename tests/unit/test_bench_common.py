"""bench.common: how busy the cores are before a section starts."""

from __future__ import annotations

import math

from bench.common import Section, cpu_busy, wait_for_quiet


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
