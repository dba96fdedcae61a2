"""bench.serving.request_ids: the two id shapes it compares, and a tiny run of it."""

from __future__ import annotations

import pytest

from bench.serving import request_ids


def test_the_before_ids_share_one_random_prefix_per_request() -> None:
    first, second = request_ids.random_ids(100), request_ids.random_ids(100)
    assert len(set(first)) == 100 and all(len(i) == 32 for i in first)
    assert {i[:24] for i in first} == {first[0][:24]} != {second[0][:24]}


def test_a_tiny_run_times_both_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    assert request_ids.main(["--rows", "1600", "--rounds", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1,600 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["time-ordered (now)", "random (before)"]
    for row in rows:
        cpu = float(row.split("|")[3].split()[0])
        assert cpu > 0
