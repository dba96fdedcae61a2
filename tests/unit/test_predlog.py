"""The prediction log: group commit, durability of acknowledged records, queries."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predlog.log import (
    FeedbackRecord,
    GroupCommitWriter,
    LogUnavailable,
    PredictionLog,
    PredictionRecord,
    RowBlock,
    describe_error,
)


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
    # Every record is on disk (staged: a commit's rows are one `prediction_blocks` row)...
    path = tmp_path / "state" / "predictions.db"
    with sqlite3.connect(path) as conn:
        staged = conn.execute("SELECT sum(n_rows), count(*) FROM prediction_blocks").fetchone()
    assert staged == (200, writer.commits)
    # ...and another process's log (a separate connection) reads them all.
    other = PredictionLog(f"sqlite:///{path}")
    try:
        assert {p.request_id for p in other.predictions()} == {f"r{i}" for i in range(200)}
    finally:
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM prediction_blocks").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (200,)


def test_a_failed_write_fails_the_waiting_requests(log: PredictionLog) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    log.append = broken  # type: ignore[method-assign]
    writer = GroupCommitWriter(log, commit_timeout_s=0.2)
    future = writer.submit([rec("lost")])
    with pytest.raises(LogUnavailable, match="prediction log unwritable: disk full"):
        future.result(timeout=5)
    assert writer.healthy is False and writer.alive
    writer.close()


def _held(log: PredictionLog, first: threading.Event) -> threading.Event:
    """Hold the writer's next append until the returned event is set."""
    gate = threading.Event()
    original = log.append

    def held_append(*args: object, **kwargs: object) -> None:
        first.set()
        gate.wait(5)
        log.append = original  # type: ignore[method-assign]
        original(*args, **kwargs)

    log.append = held_append  # type: ignore[method-assign]
    return gate


def test_a_cancelled_waiter_is_skipped_and_the_writer_keeps_going(
    log: PredictionLog,
) -> None:
    """A caller that went away (504) cancels its waiter: the writer must not die on it."""
    writer = GroupCommitWriter(log)
    started = threading.Event()
    gate = _held(log, started)
    first = writer.submit([rec("first")])
    assert started.wait(5)  # the writer holds "first"; the next ones queue
    cancelled = writer.submit([rec("gone")])
    kept = writer.submit([rec("kept")])
    assert cancelled.cancel()
    gate.set()
    first.result(timeout=5)
    kept.result(timeout=5)
    assert writer.alive
    writer.submit([rec("after")]).result(timeout=5)
    assert {r.request_id for r in log.predictions()} == {"first", "kept", "after"}
    writer.close()


def test_cancelling_through_asyncio_wrap_future_does_not_kill_the_writer(
    log: PredictionLog,
) -> None:
    """The observed failure: a feedback request timed out while the log was locked."""
    writer = GroupCommitWriter(log)
    started = threading.Event()
    gate = _held(log, started)

    async def scenario() -> None:
        blocker = asyncio.wrap_future(writer.submit([rec("held")]))
        assert await asyncio.to_thread(started.wait, 5)
        waiter = asyncio.wrap_future(writer.submit([rec("timed-out")]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiter, 0.05)  # cancels the concurrent future too
        gate.set()
        await blocker
        await asyncio.wrap_future(writer.submit([rec("next")]))

    asyncio.run(scenario())
    assert writer.alive and writer.restarts == 0
    assert {r.request_id for r in log.predictions()} == {"held", "next"}
    writer.close()


def test_a_locked_log_fails_cleanly_then_recovers_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    log = PredictionLog(f"sqlite:///{path}", busy_timeout_s=0.2)
    writer = GroupCommitWriter(log, commit_timeout_s=0.3, probe_interval_s=0.05)
    writer.submit([rec("before")]).result(timeout=5)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        future = writer.submit([rec("secret-id", temp=0.123456)])
        with pytest.raises(LogUnavailable) as failure:
            future.result(timeout=5)
        message = str(failure.value)
        assert message == "prediction log locked: database is locked"
        assert "INSERT" not in message and "secret-id" not in message
        assert writer.healthy is False
        assert writer.unavailable_reason() == message
        assert writer.status()["writable"] is False and writer.status()["unwritable_since"]
        time.sleep(0.3)  # several probes while the lock is held: still unhealthy
        assert writer.healthy is False and writer.alive
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 5
    while not writer.healthy and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.healthy, "the writer did not notice the lock was released"
    writer.submit([rec("after")]).result(timeout=5)
    assert {r.request_id for r in log.predictions()} == {"before", "after"}
    assert writer.alive and writer.restarts == 0
    writer.close()
    log.close()


def test_a_bad_record_fails_only_its_own_request(log: PredictionLog) -> None:
    writer = GroupCommitWriter(log)
    started = threading.Event()
    gate = _held(log, started)
    first = writer.submit([rec("first")])
    assert started.wait(5)
    bad_row = (None, None, 1.0, "m", "1", "champion", {"x": 1}, 1.0, 1.0)
    bad = writer.submit(rows=[bad_row])  # type: ignore[list-item]  # NOT NULL request_id
    good = writer.submit([rec("good")])
    gate.set()
    first.result(timeout=5)
    good.result(timeout=5)
    with pytest.raises(LogUnavailable, match=r"rejected the records \(IntegrityError\)"):
        bad.result(timeout=5)
    assert writer.healthy  # a bad record is not a log condition
    assert {r.request_id for r in log.predictions()} == {"first", "good"}
    writer.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_thread_is_restarted_and_no_waiter_hangs(log: PredictionLog) -> None:
    original = log.append

    def dies(*args: object, **kwargs: object) -> None:
        log.append = original  # type: ignore[method-assign]
        raise SystemExit("simulated thread death")

    log.append = dies  # type: ignore[method-assign]
    writer = GroupCommitWriter(log)
    lost = writer.submit([rec("lost")])
    with pytest.raises(LogUnavailable, match="writer failed"):
        lost.result(timeout=5)
    deadline = time.monotonic() + 5
    while writer.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not writer.alive
    assert "simulated thread death" in (writer.unavailable_reason() or "")
    writer.submit([rec("next")]).result(timeout=5)  # submit starts a new thread
    assert writer.alive and writer.restarts == 1
    assert [r.request_id for r in log.predictions()] == ["next"]
    writer.close()


def test_a_failing_commit_callback_does_not_stop_the_writer(log: PredictionLog) -> None:
    def explode(records: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    writer = GroupCommitWriter(log, on_commit=explode)
    for i in range(3):
        writer.submit([rec(f"r{i}")]).result(timeout=5)
    assert writer.alive and writer.commits == 3
    writer.close()


def test_error_text_never_carries_sql_or_values(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    with log.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE prediction_blocks")  # where a commit's rows go
    with pytest.raises(Exception) as raised:
        log.append([rec("private-id")])
    assert "private-id" not in str(raised.value)  # hide_parameters
    text = describe_error(raised.value)
    assert "INSERT" not in text and "private-id" not in text
    assert text == "prediction log unwritable: no such table: prediction_blocks"
    log.close()


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


def test_frame_joins_the_first_label_and_leaves_out_shadow_rows(log: PredictionLog) -> None:
    log.append([rec("a", temp=0.1), rec("b", temp=0.2), rec("b", "2", "shadow", temp=0.2)])
    log.append(feedback=[FeedbackRecord("a", "m", 1.0), FeedbackRecord("a", "m", 2.0)])
    frame = log.frame()
    assert list(frame["request_id"]) == ["a", "b"]
    assert list(frame["temp"]) == [0.1, 0.2]
    assert frame.loc[0, "label"] == 1.0 and frame["label"].isna().iloc[1]  # first label wins
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert log.known_request_ids(["a", "zz"]) == {"a"}
    assert [f.label for f in log.feedback()] == [1.0]
    assert [(f.label, why) for f, why in log.label_history()] == [(2.0, "superseded")]


def test_labels_are_stored_only_for_this_models_predictions_first_one_wins(
    log: PredictionLog,
) -> None:
    log.append([rec("a"), rec("b"), rec("b", "2", "shadow")])
    other = PredictionRecord("c", "other-model", "1", "champion", {"temp": 1.0}, 1.0, 1.0)
    log.append([other])
    receipt = log.store_labels(
        "m",
        [
            FeedbackRecord("a", "m", 1.0),
            FeedbackRecord("zz", "m", 9.0),  # never predicted
            FeedbackRecord("c", "m", 9.0),  # predicted, but by another model
            FeedbackRecord("a", "m", 5.0),  # a second label in the same post
        ],
    )
    assert receipt.stored == ["a"] and receipt.already_labelled == ["a"]
    assert receipt.unknown == ["zz", "c"]
    again = log.store_labels("m", [FeedbackRecord("a", "m", 7.0), FeedbackRecord("b", "m", 2.0)])
    assert again.stored == ["b"] and again.already_labelled == ["a"] and again.unknown == []
    assert {f.request_id: f.label for f in log.feedback()} == {"a": 1.0, "b": 2.0}
    assert [f.label for f, _ in log.label_history()] == [5.0, 7.0]
    frame = log.frame(roles=("champion", "shadow"))
    labels = frame.set_index(["request_id", "role"])["label"].fillna(-1.0).to_dict()
    assert labels == {
        ("a", "champion"): 1.0,
        ("b", "champion"): 2.0,
        ("b", "shadow"): 2.0,
        ("c", "champion"): -1.0,  # the other model's prediction got no label
    }
    with pytest.raises(ValueError, match="other models"):
        log.store_labels("m", [FeedbackRecord("a", "other-model", 1.0)])


# -- the fast paths agree with the plain ones ------------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=True, allow_infinity=False, width=64),
    st.text(max_size=8),  # includes quotes, backslashes, non-ASCII
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)
# Ids as the service accepts them (`bentos.schema._check_id`); versions and roles are ours.
_log_ids = st.from_regex(r"[A-Za-z0-9_.:\-/]{1,20}", fullmatch=True)
_rows = st.tuples(
    _log_ids,
    st.none() | _log_ids,
    st.floats(0, 2e9),
    st.just("m"),
    st.sampled_from(["1", "2", "10"]),
    st.sampled_from(["champion", "challenger", "shadow"]),
    st.dictionaries(st.sampled_from(["temp", "hr", "w", 'ü "q"']), _scalars, max_size=4),
    _values,
    st.floats(0, 1e4),
    st.none() | st.dictionaries(st.sampled_from(["No", "Yes", "1"]), st.floats(0, 1), min_size=1),
)


def _stored(log: PredictionLog) -> list[tuple[object, ...]]:
    """Every stored prediction as SQLite holds it: each column's value and storage type."""
    log.catch_up()
    raw = sqlite3.connect(log.engine.url.database)
    try:
        return raw.execute(
            "SELECT request_id, typeof(request_id), entity_id, typeof(entity_id), ts, typeof(ts),"
            " model_name, model_version, typeof(model_version), role, latency_ms,"
            " typeof(latency_ms), json(features), typeof(features), json(prediction),"
            " typeof(prediction), json(scores), typeof(scores) FROM predictions ORDER BY id"
        ).fetchall()
    finally:
        raw.close()


@given(st.lists(st.lists(_rows, min_size=1, max_size=5), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None)
def test_the_one_statement_insert_stores_what_the_row_by_row_insert_stores(
    commits: list[list[tuple[object, ...]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fast = PredictionLog(f"sqlite:///{tmp}/fast.db")
        plain = PredictionLog(f"sqlite:///{tmp}/plain.db")
        plain._stage = False
        try:
            assert fast._stage
            for rows in commits:
                fast.append(rows=rows)
                plain.append(rows=rows)
            assert _stored(fast) == _stored(plain)
            assert fast.predictions() == plain.predictions()
        finally:
            fast.close()
            plain.close()


_NAMES = ("temp", "it's", 'ü "q"', "hr")


@given(
    st.lists(
        st.lists(st.tuples(_rows, st.tuples(*[_scalars] * len(_NAMES))), min_size=1, max_size=5),
        min_size=1,
        max_size=3,
    )
)
@settings(max_examples=60, deadline=None)
def test_row_blocks_store_what_rows_with_feature_dicts_store(
    commits: list[list[tuple[tuple[object, ...], tuple[object, ...]]]],
) -> None:
    """A `RowBlock` (features as value tuples; the database builds the object) stores the
    same text as the same rows with feature dicts, on both insert paths."""
    with tempfile.TemporaryDirectory() as tmp:
        dicts = PredictionLog(f"sqlite:///{tmp}/dicts.db")
        block = PredictionLog(f"sqlite:///{tmp}/block.db")
        plain = PredictionLog(f"sqlite:///{tmp}/plain.db")
        plain._stage = False
        try:
            for pairs in commits:
                rows = [(*row[:6], values, *row[7:]) for row, values in pairs]
                with_dicts = [
                    (*row[:6], dict(zip(_NAMES, row[6], strict=True)), *row[7:]) for row in rows
                ]
                dicts.append(rows=with_dicts)
                block.append(blocks=[RowBlock(_NAMES, rows)])
                plain.append(blocks=[RowBlock(_NAMES, rows)])
            raw = "SELECT features FROM predictions ORDER BY id"
            block.catch_up()
            dicts.catch_up()
            assert block.engine.connect().exec_driver_sql(raw).fetchall() == (
                dicts.engine.connect().exec_driver_sql(raw).fetchall()
            )
            assert _stored(block) == _stored(dicts) == _stored(plain)
            assert block.predictions() == dicts.predictions()
        finally:
            for log in (dicts, block, plain):
                log.close()


def test_the_writer_commits_blocks_and_rows_of_several_requests_together(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db")
    writer = GroupCommitWriter(log)
    try:
        names = ("a", "b")
        futures = [
            writer.submit(
                blocks=[
                    RowBlock(
                        names,
                        [(f"r{i}", None, 1.0, "m", "1", "champion", (i, "x"), 0.5, 1.0, None)],
                    )
                ]
            )
            for i in range(3)
        ]
        futures.append(
            writer.submit(rows=[("d", None, 1.0, "m", "1", "champion", {"z": 1}, 0.5, 1.0, None)])
        )
        for future in futures:
            future.result(timeout=10)
        stored = {p.request_id: p.features for p in log.predictions()}
        assert stored == {
            "r0": {"a": 0, "b": "x"},
            "r1": {"a": 1, "b": "x"},
            "r2": {"a": 2, "b": "x"},
            "d": {"z": 1},
        }
    finally:
        writer.close()
        log.close()


def _reference_frame(
    log: PredictionLog, roles: tuple[str, ...], latest: int | None
) -> pd.DataFrame:
    """What `frame()` must return, built the slow, obvious way: record objects, Python join."""
    records = [p for p in log.predictions() if p.role in roles]
    if latest is not None:
        records = records[-latest:] if latest > 0 else []
    labels: dict[str, object] = {}
    for f in log.feedback():  # oldest first: the first label wins
        labels.setdefault(f.request_id, f.label)
    frame = pd.DataFrame([p.features for p in records])
    frame["request_id"] = [p.request_id for p in records]
    frame["entity_id"] = [p.entity_id for p in records]
    frame["timestamp"] = pd.to_datetime([p.ts for p in records], unit="s", utc=True)
    frame["model_version"] = [p.model_version for p in records]
    frame["role"] = [p.role for p in records]
    frame["latency_ms"] = [p.latency_ms for p in records]
    frame["prediction"] = [p.prediction for p in records]
    frame["label"] = [labels.get(p.request_id, float("nan")) for p in records]
    return frame


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.sampled_from(["champion", "challenger", "shadow"]),
            st.floats(-5, 5),
            st.one_of(st.none(), st.floats(0, 100), st.integers(0, 9)),
        ),
        min_size=1,
        max_size=25,
    ),
    st.one_of(st.none(), st.integers(0, 30)),
    st.sampled_from([("champion", "challenger"), ("champion", "challenger", "shadow")]),
)
@settings(max_examples=60, deadline=None)
def test_frame_matches_a_row_by_row_reference(
    events: list[tuple[str, str, float, object]],
    latest: int | None,
    roles: tuple[str, ...],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog(f"sqlite:///{tmp}/p.db")
        try:
            for i, (request_id, role, temp, label) in enumerate(events):
                log.append([rec(request_id, role=role, ts=1_000.0 + i, temp=temp)])
                if label is not None:
                    log.append(feedback=[FeedbackRecord(request_id, "m", label, 1_000.0 + i)])
            got = log.frame(roles=roles, latest=latest)
            want = _reference_frame(log, roles, latest)
            assert list(got["request_id"]) == list(want["request_id"])
            if len(want):
                pd.testing.assert_frame_equal(
                    got.reset_index(drop=True), want[list(got.columns)], check_dtype=False
                )
        finally:
            log.close()


# -- the monitor's window: bounds, exact counts, database sampling, labels, two models ------


def _traffic(
    log: PredictionLog,
    model: str,
    n: int,
    t0: float = 1_000.0,
    shadow_every: int = 0,
    start: int = 0,
    prefix: str = "",
) -> None:
    """`n` champion answers of `model` (temp = their index), a shadow row every k-th."""
    rows = []
    for i in range(start, start + n):
        features = {"temp": float(i)}
        rows.append(
            (f"{prefix}{model}-{i}", None, t0 + i, model, "1", "champion", features, i, 1.0)
        )
        if shadow_every and i % shadow_every == 0:
            rows.append(
                (f"{prefix}{model}-{i}", None, t0 + i, model, "2", "shadow", features, -i, 1.0)
            )
    log.append(rows=rows)


def test_window_counts_requests_of_one_model_and_never_shadow_rows(log: PredictionLog) -> None:
    _traffic(log, "m", 100, shadow_every=2)
    _traffic(log, "other", 50)
    _traffic(log, "m", 20, start=100, shadow_every=2)
    bounds = log.window("m", rows=30)
    assert bounds.requests == 30
    assert bounds.shadow_rows == 15  # the shadow rows of those 30 requests, not more
    frame = log.sample(bounds, max_rows=1_000)
    assert list(frame["temp"]) == [float(i) for i in range(90, 120)]
    assert set(frame["role"]) == {"champion"}
    everything = log.window("m")
    assert everything.requests == 120 and everything.shadow_rows == 60
    assert log.window("other", rows=1_000).requests == 50
    assert log.window("nobody").requests == 0
    assert log.sample(log.window("nobody"), 10).empty


def test_a_time_window_starts_at_the_first_row_logged_since(log: PredictionLog) -> None:
    _traffic(log, "m", 100, t0=1_000.0)
    bounds = log.window("m", since=1_060.0)
    assert bounds.requests == 40 and bounds.start_ts == 1_060.0
    both = log.window("m", rows=10, since=1_060.0)
    assert both.requests == 10 and both.start_ts == 1_090.0
    assert log.window("m", since=5_000.0).requests == 0
    with pytest.raises(ValueError, match="at least one row"):
        log.window("m", rows=0)


@pytest.mark.parametrize("other_rows", [0, 9_000])  # dense ids, then 10 % of the range
def test_sample_is_exactly_max_rows_uniform_over_the_window_and_deterministic(
    log: PredictionLog, other_rows: int
) -> None:
    for chunk in range(10):  # interleave the two models' rows
        _traffic(log, "m", 100, start=chunk * 100, shadow_every=3)
        if other_rows:
            _traffic(log, "other", other_rows // 10, start=chunk * 1_000)
    bounds = log.window("m")
    assert bounds.requests == 1_000
    frame = log.sample(bounds, max_rows=400, seed=7)
    temps = frame["temp"].to_numpy()
    assert len(temps) == 400 and len(set(temps)) == 400  # without replacement
    assert set(frame["role"]) == {"champion"} and frame["request_id"].str.startswith("m-").all()
    assert list(temps) == sorted(temps)  # log order kept
    # Uniform over the window: each decile holds about a tenth (binomial sd ≈ 6).
    counts = np.histogram(temps, bins=10, range=(0, 1_000))[0]
    assert counts.min() >= 20 and counts.max() <= 60, counts
    again = log.sample(bounds, max_rows=400, seed=7)
    assert list(again["temp"]) == list(temps)


# dense ids; other models' rows between them; so many that the index's ids are drawn from
@pytest.mark.parametrize("other_rows", [0, 12_000, 30_000])
def test_sample_reads_blocks_of_consecutive_requests_spread_over_the_window(
    log: PredictionLog, other_rows: int
) -> None:
    """Above the block size the sample is runs of consecutive requests (few pages read),
    one run per stratum of the window, exactly `max_rows` of them, deterministic."""
    for chunk in range(10):
        _traffic(log, "m", 400, start=chunk * 400, shadow_every=4)
        if other_rows:
            _traffic(log, "other", other_rows // 10, start=chunk * 10_000)
    bounds = log.window("m")
    assert bounds.requests == 4_000
    frame = log.sample(bounds, max_rows=600, seed=3, block_rows=20)
    temps = frame["temp"].to_numpy().astype(int)
    assert len(temps) == 600 and len(set(temps)) == 600 and list(temps) == sorted(temps)
    assert set(frame["role"]) == {"champion"}
    # runs of near neighbours (the cut down to 600 drops a few rows inside the blocks)
    runs = np.split(temps, np.flatnonzero(np.diff(temps) > 5) + 1)
    assert 30 <= len(runs) <= 60, len(runs)  # 30 blocks of ~20 (a wrapped block: two runs)
    assert np.mean([len(r) for r in runs]) >= 10
    if not other_rows:  # evenly spread: 3 strata per tenth of the window
        counts = np.histogram(temps, bins=10, range=(0, 4_000))[0]
        assert counts.min() >= 40 and counts.max() <= 80, counts
    assert list(log.sample(bounds, max_rows=600, seed=3, block_rows=20)["temp"]) == list(temps)
    assert list(log.sample(bounds, max_rows=600, seed=4, block_rows=20)["temp"]) != list(temps)
    with pytest.raises(ValueError, match="block_rows"):
        log.sample(bounds, max_rows=600, block_rows=0)


def test_stratified_blocks_cover_every_position_equally() -> None:
    from predlog.log import _stratified_blocks

    covered = np.zeros(1_000)
    rng = np.random.default_rng(0)
    for _ in range(2_000):
        starts, ends = _stratified_blocks(1_000, 7, 40, rng)
        assert (starts[1:] > ends[:-1]).all()  # sorted, never overlapping
        for a, b in zip(starts, ends, strict=True):
            covered[a : b + 1] += 1
    share = covered / 2_000  # each position: 40 of a ~143-long stratum
    assert abs(share.mean() - 7 * 40 / 1_000) < 1e-9
    assert share.min() > 0.24 and share.max() < 0.32, (share.min(), share.max())
    starts, ends = _stratified_blocks(10, 20, 5, rng)  # more blocks than positions
    assert list(starts) == list(range(10)) and list(ends) == list(range(10))


def test_labels_first_one_wins_shadow_rows_count_and_models_stay_apart(
    log: PredictionLog,
) -> None:
    _traffic(log, "m", 10, shadow_every=5)
    _traffic(log, "other", 10)
    log.append(
        feedback=[
            FeedbackRecord("m-0", "m", 1.0),
            FeedbackRecord("m-0", "m", 99.0),  # a later label for the same request
            FeedbackRecord("m-5", "m", 5.0),
            FeedbackRecord("m-6", "other", 6.0),  # another model's label: not m's
            FeedbackRecord("other-1", "other", 7.0),
        ]
    )
    labelled = log.labelled(log.window("m")).rows
    got = sorted(zip(labelled["role"], labelled["prediction"], labelled["label"], strict=True))
    assert got == [
        ("champion", 0, 1.0),
        ("champion", 5, 5.0),
        ("shadow", -5, 5.0),
        ("shadow", 0, 1.0),
    ]
    other = log.labelled(log.window("other")).rows
    assert list(other["label"]) == [7.0]
    assert log.labelled(log.window("m", rows=3)).rows.empty  # m-7..m-9 have no label
    frame = log.labelled_frame(log.window("m"))
    assert list(frame["request_id"]) == ["m-0", "m-5"] and list(frame["label"]) == [1.0, 5.0]
    assert log.known_request_ids(["m-1", "other-1"], model_name="m") == {"m-1"}


def test_prune_deletes_old_rows_in_batches_and_keeps_the_rest(log: PredictionLog) -> None:
    _traffic(log, "m", 50, t0=1_000.0, shadow_every=10)
    _traffic(log, "other", 50, t0=1_000.0)
    log.append(feedback=[FeedbackRecord(f"m-{i}", "m", 1.0, 1_000.0 + i) for i in range(50)])
    seen: list[tuple[int, int]] = []
    deleted = log.prune(
        1_030.0, model_name="m", batch_rows=7, progress=lambda p, f: seen.append((p, f))
    )
    assert deleted == (33, 30)  # 30 answers + 3 shadow rows, 30 labels
    assert len(seen) > 5  # batch by batch
    assert log.window("m").requests == 20 and log.count("other") == 50
    assert min(r.ts for r in log.predictions(model_name="m")) == 1_030.0
    assert log.prune(1_030.0, model_name="m") == (0, 0)
    with pytest.raises(ValueError, match="time bound"):
        log.prune(None)


def test_an_older_log_gets_the_new_indexes_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE predictions (id INTEGER PRIMARY KEY, request_id VARCHAR(128) NOT NULL,"
            " entity_id VARCHAR(128), ts FLOAT NOT NULL, model_name VARCHAR(128) NOT NULL,"
            " model_version VARCHAR(32) NOT NULL, role VARCHAR(16) NOT NULL, features JSON NOT"
            " NULL, prediction JSON, latency_ms FLOAT NOT NULL)"
        )
    log = PredictionLog(f"sqlite:///{path}")
    try:
        with sqlite3.connect(path) as conn:
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
            }
        assert {"ix_predictions_model_role_id", "ix_predictions_model_ts"} <= names
    finally:
        log.close()


def test_above_max_labels_an_evenly_spread_share_of_the_labels_is_joined(
    log: PredictionLog,
) -> None:
    _traffic(log, "m", 1_000, t0=1_000.0)
    log.append(
        feedback=[FeedbackRecord(f"m-{i}", "m", float(i), 1_000.5 + i) for i in range(1_000)]
    )
    log.append(feedback=[FeedbackRecord("m-3", "m", -1.0, 5_000.0)])  # a later label: ignored
    bounds = log.window("m")
    full = log.labelled(bounds)
    # The later label went to label_history: 1,000 candidate labels.
    assert (full.every, full.candidates, len(full.rows)) == (1, 1_000, 1_000)
    assert -1.0 not in set(full.rows["label"])
    part = log.labelled(bounds, max_labels=100)
    assert part.every == 10 and part.sampled
    assert len(part.rows) == 100  # every 10th label
    assert set(part.rows["label"]) <= set(full.rows["label"])
    assert abs(part.rows["label"].astype(float).mean() - 500) < 40  # spread over the window
    recent = log.labelled(log.window("m", rows=100), max_labels=1_000)
    assert len(recent.rows) == 100 and recent.candidates < 1_000  # only labels since then


# -- classifier scores ------------------------------------------------------------------------


def test_scores_are_stored_with_a_classifiers_rows_and_read_back_by_request_id(
    log: PredictionLog,
) -> None:
    rows = [
        ("a", None, 1.0, "m", "1", "champion", {"x": 1}, "Yes", 1.0, {"No": 0.2, "Yes": 0.8}),
        ("a", None, 1.0, "m", "2", "shadow", {"x": 1}, "No", 1.0, {"No": 0.6, "Yes": 0.4}),
        ("b", None, 2.0, "m", "1", "champion", {"x": 2}, "No", 1.0, None),
        ("c", None, 3.0, "m", "1", "champion", {"x": 3}, 4.5, 1.0),  # a 9-field row
        ("a", None, 1.0, "other", "1", "champion", {"x": 1}, "No", 1.0, {"No": 1.0}),
    ]
    log.append(rows=rows)  # type: ignore[arg-type]
    found = log.scores("m", ["a", "b", "c", "missing"])
    assert sorted(map(tuple, found[["request_id", "model_version", "role"]].values)) == [
        ("a", "1", "champion"),
        ("a", "2", "shadow"),
    ]
    by_version = dict(zip(found["model_version"], found["scores"], strict=True))
    assert by_version == {"1": {"No": 0.2, "Yes": 0.8}, "2": {"No": 0.6, "Yes": 0.4}}
    assert [p.scores for p in log.predictions(model_name="m")] == [
        {"No": 0.2, "Yes": 0.8},
        {"No": 0.6, "Yes": 0.4},
        None,
        None,
    ]


def test_a_log_created_before_scores_gains_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.execute(
        "CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id VARCHAR(128)"
        " NOT NULL, entity_id VARCHAR(128), ts FLOAT NOT NULL, model_name VARCHAR(128) NOT NULL,"
        " model_version VARCHAR(32) NOT NULL, role VARCHAR(16) NOT NULL, features JSON NOT NULL,"
        " prediction JSON, latency_ms FLOAT NOT NULL)"
    )
    raw.execute(
        "INSERT INTO predictions (request_id, ts, model_name, model_version, role, features,"
        " prediction, latency_ms) VALUES ('old', 1.0, 'm', '1', 'champion', '{\"x\": 1}', '3', 1)"
    )
    raw.commit()
    raw.close()
    log = PredictionLog(f"sqlite:///{path}")
    try:
        log.append(
            rows=[("new", None, 2.0, "m", "1", "champion", {"x": 2}, "Yes", 1.0, {"Yes": 1.0})]
        )
        assert [(p.request_id, p.scores) for p in log.predictions()] == [
            ("old", None),
            ("new", {"Yes": 1.0}),
        ]
        assert log.scores("m", ["old", "new"])["request_id"].tolist() == ["new"]
    finally:
        log.close()


# -- staged commits (SQLite): one `prediction_blocks` row per commit, moved on read ---------
def _block_rows(prefix: str, n: int) -> list[tuple[object, ...]]:
    return [
        (f"{prefix}-{i}", None, 1.0e9 + i, "m", "1", "champion", (i, 0.5), 2.0 * i, 1.0)
        for i in range(n)
    ]


def test_catch_up_moves_staged_blocks_in_commit_order_in_bounded_transactions(
    log: PredictionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import predlog.log as predlog_log

    for k in range(5):
        log.append(blocks=[RowBlock(("a", "b"), _block_rows(f"c{k}", 3))])
    moved_per_transaction: list[int] = []
    insert = predlog_log._sqlite_insert

    def counting(conn: object, params: list[tuple[object, ...]]) -> None:
        moved_per_transaction.append(len(params))
        insert(conn, params)  # type: ignore[arg-type]

    monkeypatch.setattr(predlog_log, "_CATCH_UP_ROWS", 6)
    monkeypatch.setattr(predlog_log, "_sqlite_insert", counting)
    assert log.catch_up() == 15
    assert moved_per_transaction == [6, 6, 3]  # whole blocks, at most 6 rows a transaction
    assert log.catch_up() == 0
    assert [p.request_id for p in log.predictions()] == [
        f"c{k}-{i}" for k in range(5) for i in range(3)
    ]
    assert log.predictions()[4].features == {"a": 1, "b": 0.5}


def test_readers_of_one_log_move_each_staged_block_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    writer, readers = PredictionLog(url), [PredictionLog(url) for _ in range(3)]
    try:
        for k in range(60):
            writer.append(blocks=[RowBlock(("a", "b"), _block_rows(f"c{k}", 7))])
        start = threading.Barrier(len(readers))
        moved: list[int] = []

        def read(reader: PredictionLog) -> None:
            start.wait()
            moved.append(reader.catch_up())

        threads = [threading.Thread(target=read, args=(r,)) for r in readers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(moved) == 60 * 7
        ids = [p.request_id for p in writer.predictions()]
        assert ids == [f"c{k}-{i}" for k in range(60) for i in range(7)]  # commit order
    finally:
        for log in (writer, *readers):
            log.close()


def test_staged_values_come_back_exactly_where_orjson_cannot_write_them(tmp_path: Path) -> None:
    """A value orjson cannot write (beyond 64 bits, a lone surrogate) makes jsonio fall back to
    json for it; the staged block then keeps each value as the direct insert writes it."""
    staged = PredictionLog(f"sqlite:///{tmp_path / 'staged.db'}")
    plain = PredictionLog(f"sqlite:///{tmp_path / 'plain.db'}")
    plain._stage = False
    when = datetime(2011, 1, 1, 5, tzinfo=UTC)
    odd = [
        ("big", None, 1.0e9, "m", "1", "champion", {"x": 2**65, "n": np.int64(3)}, 2**70, 1.0),
        ("sur", "e", 1.0e9, "m", "1", "shadow", {"s": "a\ud800b", "f": np.float32(0.1)}, None, 2.0),
        (
            "nan",
            None,
            1.0e9,
            "m",
            "1",
            "champion",
            {"v": float("nan"), "t": when},
            [1, None],
            3.0,
            {"A": 0.5},
        ),
    ]
    blocks = [
        RowBlock(
            ("x", "when"), [("blk", None, 1.0e9, "m", "1", "champion", (2**64, when), 1.5, 1.0)]
        )
    ]
    try:
        for log in (staged, plain):
            log.append(rows=odd, blocks=blocks)
        with sqlite3.connect(tmp_path / "staged.db") as raw:
            texts = [r[0] for r in raw.execute("SELECT rows FROM prediction_blocks ORDER BY id")]
        assert [t.startswith("\n") for t in texts] == [True, True]  # the exact path, both
        assert _stored(staged) == _stored(plain)
        assert staged.predictions() == plain.predictions()
    finally:
        staged.close()
        plain.close()


def test_a_row_the_log_would_refuse_fails_its_own_commit_not_a_later_read(
    log: PredictionLog,
) -> None:
    with pytest.raises(ValueError, match="do not match the 2 feature names"):
        log.append(
            blocks=[RowBlock(("a", "b"), [("r", None, 1.0, "m", "1", "champion", (1,), 1.0, 1.0)])]
        )
    with pytest.raises(sqlite3.IntegrityError, match=r"predictions\.model_version"):
        log.append(rows=[("r", None, 1.0, "m", None, "champion", {"a": 1}, 1.0, 1.0)])
    with pytest.raises(ValueError, match="8 fields"):
        log.append(rows=[("r", None, 1.0, "m", "1", "champion", {"a": 1}, 1.0)])
    assert log.count() == 0


def test_staged_predictions_survive_a_restart_before_anyone_reads_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    first = PredictionLog(url)
    writer = GroupCommitWriter(first)
    writer.submit(blocks=[RowBlock(("a", "b"), _block_rows("r", 4))]).result(timeout=10)
    writer.close()
    first.close()
    again = PredictionLog(url)
    try:
        assert [p.request_id for p in again.predictions()] == [f"r-{i}" for i in range(4)]
    finally:
        again.close()


def test_a_staged_block_that_cannot_be_read_back_names_itself(log: PredictionLog) -> None:
    with log.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO prediction_blocks (n_rows, feature_names, rows) VALUES (1, NULL, '[[')"
        )
    with pytest.raises(RuntimeError, match=r"staged block 1 .* cannot be read back"):
        log.count()


def test_labels_for_moved_predictions_leave_staged_ones_where_they_are(
    log: PredictionLog,
) -> None:
    """POST /feedback moves staged rows only for a label whose prediction is still staged."""
    log.append([rec("old")])
    log.catch_up()
    log.append([rec("new")])

    def staged() -> int:
        with log.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM prediction_blocks").scalar()

    assert log.store_labels("m", [FeedbackRecord("old", "m", 1.0)]).stored == ["old"]
    assert staged() == 1
    assert log.store_labels("m", [FeedbackRecord("new", "m", 2.0)]).stored == ["new"]
    assert staged() == 0
