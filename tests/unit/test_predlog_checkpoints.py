"""predlog.log.WalCheckpointer: a serving log's WAL is copied back by a thread of its own,
not by the commit a request waits for, and the WAL still starts over (bounded size)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from predlog.log import _WAL_RESTART_PAGES, PredictionLog, PredictionRecord, WalCheckpointer


def records(n: int, prefix: str) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            f"{prefix}-{i}", "m", "1", "champion", {"temp": i / n, "s": "x" * 40}, i, 1.0
        )
        for i in range(n)
    ]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "predictions.db"


def until(check, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_commits_leave_the_checkpoint_to_the_thread(path: Path) -> None:
    log = PredictionLog(f"sqlite:///{path}", background_checkpoints=True)
    try:
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == _WAL_RESTART_PAGES
        assert log.checkpointer is not None
        log.append(records(200, "a"))  # far fewer pages than the commit's own threshold
        # Everything committed has been copied into the database, by the thread.
        checkpointer = log.checkpointer
        assert until(lambda: (checkpointer.last_result or (0, -1))[0] > 0)
        assert until(lambda: checkpointer.last_result[0] == checkpointer.last_result[1])
        assert checkpointer.last_error is None
    finally:
        log.close()
    assert not log.checkpointer._thread.is_alive()  # close() stops it


def test_the_default_log_checkpoints_in_its_commits(path: Path) -> None:
    log = PredictionLog(f"sqlite:///{path}")
    try:
        assert log.checkpointer is None
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    finally:
        log.close()


def test_under_steady_commits_the_wal_starts_over_and_nothing_is_lost(path: Path) -> None:
    log = PredictionLog(f"sqlite:///{path}", background_checkpoints=True)
    page = 4096
    try:
        for k in range(300):  # ~40 MB of WAL written in all: more than two restarts' worth
            log.append(records(100, f"r{k}"))
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size <= (_WAL_RESTART_PAGES + 200) * (page + 24)
    finally:
        log.close()
    reader = PredictionLog(f"sqlite:///{path}")
    try:
        assert len(reader.frame(model_name="m")) == 300 * 100
    finally:
        reader.close()


def test_a_dead_checkpoint_thread_is_started_again_by_the_next_commit(path: Path) -> None:
    log = PredictionLog(f"sqlite:///{path}", background_checkpoints=True)
    try:
        checkpointer = log.checkpointer
        assert checkpointer is not None
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        checkpointer._thread = dead
        before = checkpointer.checkpoints
        log.append(records(10, "b"))
        assert checkpointer._thread.is_alive()
        assert until(lambda: checkpointer.checkpoints > before)
    finally:
        log.close()


def test_small_commits_wake_the_thread_once_enough_rows_were_written(path: Path) -> None:
    log = PredictionLog(f"sqlite:///{path}")
    log.append(records(10, "a"))
    checkpointer = WalCheckpointer(str(path), idle_interval_s=30.0, rows_per_checkpoint=100)
    try:
        for _ in range(20):
            checkpointer.nudge(1)
        time.sleep(0.3)
        assert checkpointer.checkpoints == 0  # 20 rows: no wake-up per commit
        checkpointer.nudge(80)
        assert until(lambda: checkpointer.checkpoints == 1)
        assert checkpointer.last_error is None
    finally:
        checkpointer.close()
        log.close()
