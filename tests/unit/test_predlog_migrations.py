"""The prediction log's schema migrations (Alembic, predlog/migrations) on SQLite: a new
log, a log made before migrations by this code, an older log with rows, repeated and
concurrent opens, and `driftloop log migrate`."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from driftloop.cli import app
from predlog import migrations
from predlog.fallbacks import record_fallback_event
from predlog.log import FeedbackRecord, PredictionLog
from predlog.tables import fallback_events_table, predictions_table


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def revisions(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute(f"SELECT * FROM {migrations.VERSION_TABLE}")]


ROWS = [(f"r{i}", None, 1.0e9 + i, "m", "1", "champion", {"x": i}, 2.0 * i, 1.0) for i in range(5)]


def test_head_is_the_newest_revision_in_the_package() -> None:
    assert migrations.script_heads() == (migrations.HEAD,)
    assert (migrations.FOLDER / "env.py").is_file()


def test_a_new_log_is_created_at_head_with_exactly_the_codes_schema(tmp_path: Path) -> None:
    path = tmp_path / "state" / "predictions.db"
    log = PredictionLog(url(path))
    try:
        assert migrations.current_revision(log.engine) == migrations.HEAD
        assert migrations.schema_differences(log.engine) == []
        # its own version table: MLflow's `alembic_version` may share the database
        assert tables(path) == {*migrations.TABLES, migrations.VERSION_TABLE}
        log.append(rows=ROWS)
        record_fallback_event(log, "m", "2", "1", "ValueError: x")
        assert log.count() == 5
    finally:
        log.close()


def test_a_log_made_by_the_code_before_migrations_is_adopted_with_its_rows(
    tmp_path: Path,
) -> None:
    """What `create_all` made before Alembic: the same tables, no revision recorded."""
    path = tmp_path / "predictions.db"
    engine = sa.create_engine(url(path))
    migrations.code_metadata().create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            predictions_table.insert(),
            [
                dict(
                    zip(
                        (
                            "request_id",
                            "entity_id",
                            "ts",
                            "model_name",
                            "model_version",
                            "role",
                            "features",
                            "prediction",
                            "latency_ms",
                        ),
                        row,
                        strict=True,
                    )
                )
                for row in ROWS
            ],
        )
        conn.execute(
            fallback_events_table.insert().values(
                ts=1.0, model_name="m", failed_version="2", answered_by="1", error="boom"
            )
        )
    assert migrations.current_revision(engine) is None
    done = migrations.upgrade(engine)
    assert (done.before, done.after, done.adopted, done.changed) == (
        None,
        migrations.HEAD,
        True,
        True,
    )
    engine.dispose()
    log = PredictionLog(url(path))
    try:
        assert [p.request_id for p in log.predictions()] == [r[0] for r in ROWS]
        assert migrations.schema_differences(log.engine) == []
        with log.engine.connect() as conn:
            events = conn.execute(sa.select(fallback_events_table.c.error)).scalars().all()
        assert events == ["boom"]
    finally:
        log.close()
    assert revisions(path) == [migrations.HEAD]


def test_an_older_log_with_rows_reaches_head_and_keeps_them(tmp_path: Path) -> None:
    """A log of the first releases: no `scores`, no label_history, no fallback_events,
    none of the later indexes."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TABLE predictions (id INTEGER PRIMARY KEY, request_id VARCHAR(128) NOT NULL,"
            " entity_id VARCHAR(128), ts FLOAT NOT NULL, model_name VARCHAR(128) NOT NULL,"
            " model_version VARCHAR(32) NOT NULL, role VARCHAR(16) NOT NULL, features JSON NOT"
            " NULL, prediction JSON, latency_ms FLOAT NOT NULL)"
        )
        raw.execute(
            "CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(128) NOT NULL,"
            " ts FLOAT NOT NULL, model_name VARCHAR(128) NOT NULL, label JSON NOT NULL)"
        )
        raw.executemany(
            "INSERT INTO predictions (request_id, ts, model_name, model_version, role, features,"
            " prediction, latency_ms) VALUES (?, ?, 'm', '1', 'champion', ?, ?, 1)",
            [(f"old{i}", float(i), f'{{"x": {i}}}', str(i)) for i in range(3)],
        )
        raw.execute(
            "INSERT INTO feedback (request_id, ts, model_name, label) VALUES"
            " ('old1', 5.0, 'm', '10')"
        )
    log = PredictionLog(url(path))
    try:
        assert migrations.current_revision(log.engine) == migrations.HEAD
        assert tables(path) == {*migrations.TABLES, migrations.VERSION_TABLE}
        frame = log.frame()
        assert frame["request_id"].tolist() == ["old0", "old1", "old2"]
        assert frame["label"].tolist()[1] == 10
        assert [p.scores for p in log.predictions()] == [None, None, None]
        log.append(
            rows=[("new", None, 9.0, "m", "1", "champion", {"x": 9}, "Yes", 1.0, {"Yes": 0.9})],
            feedback=[FeedbackRecord("old1", "m", 11.0)],  # later label: label_history
        )
        assert [f.label for f, _ in log.label_history()] == [11.0]
        assert log.scores("m", ["new"])["request_id"].tolist() == ["new"]
        with sqlite3.connect(path) as raw:
            indexes = {
                r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")
            }
        assert {"ix_predictions_model_role_id", "ix_feedback_model_request_id"} <= indexes
    finally:
        log.close()


def test_opening_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    PredictionLog(url(path)).close()
    engine = sa.create_engine(url(path))
    try:
        assert migrations.ensure_head(engine) is None  # at head: not even the lock is taken
        again = migrations.upgrade(engine)
        assert (again.before, again.after, again.changed) == (
            migrations.HEAD,
            migrations.HEAD,
            False,
        )
    finally:
        engine.dispose()
    assert revisions(path) == [migrations.HEAD]


def test_processes_opening_a_new_log_at_once_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_log() -> None:
        try:
            start.wait()
            log = PredictionLog(url(path))
            log.append(rows=ROWS[:1])
            log.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert revisions(path) == [migrations.HEAD]
    log = PredictionLog(url(path))
    try:
        assert log.count() == 4
    finally:
        log.close()


def test_driftloop_log_migrate_upgrades_and_shows_the_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DRIFTLOOP_PREDICTION_LOG_URL", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["log", "migrate", "--check"])
    assert missing.exit_code == 1 and "no prediction log at" in missing.output
    path = tmp_path / "predictions.db"
    engine = sa.create_engine(url(path))
    migrations.code_metadata().create_all(engine)  # a log from before migrations
    engine.dispose()
    behind = runner.invoke(app, ["log", "migrate", "--check"])
    assert behind.exit_code == 1, behind.output
    assert "revision none" in behind.output and "run `driftloop log migrate`" in behind.output
    first = runner.invoke(app, ["log", "migrate"])
    assert first.exit_code == 0, first.output
    assert f"made before migrations, adopted → revision {migrations.HEAD} (head)" in first.output
    second = runner.invoke(app, ["log", "migrate"])
    assert second.exit_code == 0 and "nothing to do" in second.output
    ok = runner.invoke(app, ["log", "migrate", "--check"])
    assert ok.exit_code == 0 and f"revision {migrations.HEAD} (head)" in ok.output


def test_a_log_that_cannot_be_opened_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DRIFTLOOP_PREDICTION_LOG_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    )
    result = CliRunner().invoke(app, ["log", "migrate"])
    assert result.exit_code == 1
    assert "cannot migrate the prediction log at postgresql+psycopg://nobody:***@" in result.output
    assert "secret" not in result.output


def test_a_log_migrated_by_a_newer_driftloop_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    PredictionLog(url(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(RuntimeError, match=r"revision 9999, which this driftloop does not know"):
        PredictionLog(url(path))
    assert revisions(path) == ["9999"]  # left as it was
    engine = sa.create_engine(url(path))
    with pytest.raises(RuntimeError, match="a newer driftloop migrated it"):
        migrations.upgrade(engine)
    engine.dispose()


def test_downgrading_past_staging_refuses_while_predictions_are_staged(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    path = tmp_path / "predictions.db"
    log = PredictionLog(url(path))
    log.append(rows=ROWS)

    def downgrade() -> None:
        with log.engine.connect() as conn:
            config = Config()
            config.set_main_option("script_location", str(migrations.FOLDER))
            config.attributes.update(connection=conn, version_table=migrations.VERSION_TABLE)
            command.downgrade(config, "0001")
            conn.commit()

    try:
        with pytest.raises(RuntimeError, match=r"1 staged blocks .*catch_up"):
            downgrade()
        assert revisions(path) == [migrations.HEAD]
        log.catch_up()
        downgrade()
        assert revisions(path) == ["0001"] and "prediction_blocks" not in tables(path)
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT count(*) FROM predictions").fetchone() == (5,)
    finally:
        log.close()
