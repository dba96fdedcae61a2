"""bench.serving.staging: the before path writes what staging writes, and a tiny run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.serving import staging
from bench.serving.request_ids import request
from bentos.schema import new_request_ids
from predlog.log import PredictionLog


def test_the_before_path_stores_what_a_staged_commit_stores_once_moved(tmp_path: Path) -> None:
    blocks = [request(new_request_ids, random.Random(0)) for _ in range(3)]
    before = PredictionLog(f"sqlite:///{tmp_path / 'before.db'}")
    now = PredictionLog(f"sqlite:///{tmp_path / 'now.db'}")
    try:
        staging.row_by_row(before, blocks)
        now.append(blocks=blocks)
        assert before.catch_up() == 0 and now.catch_up() == 300
        assert before.predictions() == now.predictions()
    finally:
        before.close()
        now.close()


def test_a_tiny_run_times_all_three(capsys: pytest.CaptureFixture[str]) -> None:
    assert staging.main(["--rows", "1600", "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in lines if "| " in line}
    for name in ("row by row (before)", "staged (now)", "catch-up"):
        assert float(rows[name].split()[0]) > 0
