"""The prediction log: group commit, durability of acknowledged records, queries."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bentos.predlog import FeedbackRecord, GroupCommitWriter, PredictionLog, PredictionRecord


def rec(
    request_id: str,
    version: str = "1",
    role: str = "champion",
    ts: float | None = None,
    temp: float = 0.5,
) -> PredictionRecord:
    kwargs = {} if ts is None else {"ts": ts}
    return PredictionRecord(
        request_id=request_id,
        model_name="m",
        model_version=version,
        role=role,
        features={"temp": temp, "when": datetime(2011, 1, 1, tzinfo=UTC)},
        prediction=temp * 10,
        latency_ms=3.0,
        **kwargs,
    )


@pytest.fixture
def log(tmp_path: Path) -> PredictionLog:
    log = PredictionLog(f"sqlite:///{tmp_path / 'state' / 'predictions.db'}")
    yield log
    log.close()


def test_sqlite_log_is_in_wal_mode_with_full_sync(log: PredictionLog, tmp_path: Path) -> None:
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert (tmp_path / "state" / "predictions.db").exists()


def test_many_concurrent_submits_share_commits_and_all_land_on_disk(
    log: PredictionLog, tmp_path: Path
) -> None:
    gate = threading.Event()
    original = log.append

    def slow_first_append(*args: object, **kwargs: object) -> None:
        gate.wait(2)  # hold the first commit so the others queue behind it
        original(*args, **kwargs)

    log.append = slow_first_append  # type: ignore[method-assign]
    writer = GroupCommitWriter(log)
    futures = [writer.submit([rec(f"r{i}")]) for i in range(200)]
    gate.set()
    for future in futures:
        future.result(timeout=10)
    assert writer.commits < 20  # 200 requests, a handful of transactions
    writer.close()
    # A separate connection (another process would see the same) finds every record.
    with sqlite3.connect(tmp_path / "state" / "predictions.db") as conn:
        ids = {row[0] for row in conn.execute("SELECT request_id FROM predictions")}
    assert ids == {f"r{i}" for i in range(200)}


def test_a_failed_write_fails_the_waiting_requests(log: PredictionLog) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    log.append = broken  # type: ignore[method-assign]
    writer = GroupCommitWriter(log, retries=0)
    future = writer.submit([rec("lost")])
    with pytest.raises(OSError, match="disk full"):
        future.result(timeout=5)
    writer.close()


def test_query_by_time_window_version_and_role(log: PredictionLog) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    log.append(
        [
            rec("a", "1", ts=t0),
            rec("b", "2", "challenger", ts=t0 + 60),
            rec("b", "2", "shadow", ts=t0 + 60),
            rec("c", "1", ts=t0 + 3600),
        ]
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    window = log.predictions(start, start + timedelta(minutes=30))
    assert [r.request_id for r in window] == ["a", "b", "b"]
    assert [r.request_id for r in log.predictions(model_version="1")] == ["a", "c"]
    assert [r.role for r in log.predictions(roles=["shadow"])] == ["shadow"]
    assert window[0].features["when"] == "2011-01-01 00:00:00+00:00"  # datetimes kept as text
    with pytest.raises(ValueError, match="no time zone"):
        log.predictions(datetime(2026, 1, 1))


def test_frame_joins_the_latest_label_and_leaves_out_shadow_rows(log: PredictionLog) -> None:
    log.append([rec("a", temp=0.1), rec("b", temp=0.2), rec("b", "2", "shadow", temp=0.2)])
    log.append(feedback=[FeedbackRecord("a", "m", 1.0), FeedbackRecord("a", "m", 2.0)])
    frame = log.frame()
    assert list(frame["request_id"]) == ["a", "b"]
    assert list(frame["temp"]) == [0.1, 0.2]
    assert frame.loc[0, "label"] == 2.0 and frame["label"].isna().iloc[1]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert log.known_request_ids(["a", "zz"]) == {"a"}
    assert len(log.feedback()) == 2
