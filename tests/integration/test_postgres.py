"""The scaled-out parts on a real PostgreSQL: a throwaway cluster (initdb in a temp folder,
a free port) holds the MLflow backend store, the Prefect server's database and the
prediction log; MLflow serves its artifacts, so clients never touch the server's disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres() -> Iterator[procs.PostgresCluster]:
    # Not under pytest's basetemp: pytest resets that folder to 0700 whenever a session
    # starts, and the server runs as the `postgres` account when we are root.
    folder = Path(tempfile.mkdtemp(prefix="driftloop-pg-"))
    cluster = procs.start_postgres(folder / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_mlflow_registry_and_history_on_postgres(
    postgres: procs.PostgresCluster, tmp_path: Path
) -> None:
    import mlflow

    from registry import Registry

    database = postgres.create_database("mlflow")
    port = procs.free_port()
    server = procs.start_mlflow_server(
        "mlflow-pg", port, tmp_path, tmp_path / "mlflow.log", postgres.url(database)
    )
    try:
        server.wait_healthy(timeout_s=120)
        uri = server.base_url
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("pg")
        run = client.create_run(experiment)
        source = tmp_path / "note.json"
        source.write_text(json.dumps({"stored": "through the server"}))
        client.log_artifact(run.info.run_id, str(source))
        client.set_terminated(run.info.run_id)

        registry = Registry("pg-model", uri)
        first = registry.register(f"runs:/{run.info.run_id}/note.json", run.info.run_id)
        second = registry.register(f"runs:/{run.info.run_id}/note.json", run.info.run_id)
        registry.set_alias("champion", first.version, "first", "test")
        registry.promote(second.version, "better", "test", {"rmse": 1.0})
        assert registry.aliases() == {"champion": second.version, "previous": first.version}
        moves = registry.history.list()
        assert [m.reason for m in moves][:2] in (["first", "better"], ["better", "first"])

        fetched = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="note.json",
            dst_path=str(tmp_path / "fetched"),
            tracking_uri=uri,
        )
        assert json.loads(Path(fetched).read_text()) == {"stored": "through the server"}
    finally:
        server.stop()


def test_prefect_server_on_postgres_runs_a_flow(
    postgres: procs.PostgresCluster, tmp_path: Path
) -> None:
    database = postgres.create_database("prefect")
    port = procs.free_port()
    env = procs.prefect_server_env(tmp_path, database_url=postgres.url(database, "asyncpg"))
    server = procs.start_server(
        "prefect-pg",
        procs.prefect_server_argv(port),
        health_url=f"http://127.0.0.1:{port}/api/health",
        base_url=f"http://127.0.0.1:{port}/api",
        log_path=tmp_path / "prefect.log",
        env=env,
    )
    try:
        server.wait_healthy(timeout_s=120)
        script = """
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow(name="pg-check")
def check() -> int:
    return double(21)

print(check())
"""
        client_env = {
            **os.environ,
            "PREFECT_API_URL": server.base_url,
            "PREFECT_HOME": str(tmp_path / "client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == "42"
        import httpx

        runs = httpx.post(f"{server.base_url}/flow_runs/filter", json={}, timeout=10).json()
        assert [(r["name"] != "", r["state_type"]) for r in runs] == [(True, "COMPLETED")]
    finally:
        server.stop()


def test_prediction_log_on_postgres_reads_back_what_sqlite_reads(
    postgres: procs.PostgresCluster, tmp_path: Path
) -> None:
    from config.settings import Settings
    from pipelines.monitor import read_window
    from predlog.log import FeedbackRecord, PredictionLog, PredictionRecord

    records = [
        PredictionRecord(
            request_id=f"r{i}",
            model_name="pg-model",
            model_version="1" if i % 3 else "2",
            role="champion" if i % 3 else "challenger",
            features={"temp": 0.1 * i, "weathersit": "clear" if i % 2 else "misty", "hr": i},
            prediction=float(i) * 1.5,
            latency_ms=2.0,
            ts=1_700_000_000.0 + i,
        )
        for i in range(30)
    ]
    labels = [FeedbackRecord(f"r{i}", "pg-model", float(i)) for i in range(0, 30, 4)]
    logs = {
        "postgres": PredictionLog(postgres.url(postgres.create_database("predlog"))),
        "sqlite": PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}"),
    }
    shadow = [
        PredictionRecord("r0", "pg-model", "2", "shadow", records[0].features, 7.0, 2.0, 1.7e9)
    ]
    other = [PredictionRecord("o1", "other", "1", "champion", {"temp": 9.0}, 1.0, 2.0, 1.7e9)]
    frames, reads, receipts = {}, {}, {}
    for name, log in logs.items():
        log.append(predictions=records)
        log.append(feedback=labels)
        # The service's label path: known ids of this model only, the first label wins.
        receipts[name] = log.store_labels(
            "pg-model",
            [
                FeedbackRecord("r0", "pg-model", 99.0),  # already labelled: history
                FeedbackRecord("r1", "pg-model", 1.0),  # first label: counts
                FeedbackRecord("nope", "pg-model", 1.0),  # never predicted: dropped
            ],
        )
        assert [f.label for f, _ in log.label_history()] == [99.0]
        first = log.frame().set_index("request_id").loc[["r0", "r1"], "label"].tolist()
        assert first == [0.0, 1.0], name
        frames[name] = log.frame(latest=20)
        assert log.count() == 30
        # The monitor's reads: window bounds and counts, database sample, labels, prune.
        log.append(predictions=[*shadow, *other])
        log.append(feedback=[FeedbackRecord("r0", "pg-model", -1.0)])  # later: ignored
        bounds = log.window("pg-model", rows=25)
        sample = log.sample(bounds, max_rows=10, seed=3)
        labelled = log.labelled(bounds).rows.sort_values(["role", "label"])
        # Label coverage and delay by aggregate SQL (nearest-rank percentiles by OFFSET).
        label_figures = [
            (f.model_version, f.rows_by_role, f.matured_rows, f.labelled_rows, f.labels)
            for f in log.label_figures(bounds, matured_before=1_700_000_020.0)
        ]
        delays = [(f.delay_p50_s, f.delay_p90_s) for f in log.label_figures(bounds) if f.labels]
        assert delays and all(0 < p50 <= p90 for p50, p90 in delays), delays
        # The monitor's path: the same figures from the labelled rows it read already.
        from_rows = log.label_figures(
            bounds, matured_before=1_700_000_020.0, labelled=log.labelled(bounds)
        )
        assert [
            (f.model_version, f.rows_by_role, f.matured_rows, f.labelled_rows, f.labels)
            for f in from_rows
        ] == label_figures, name
        # The monitor's read task: the sample read in a second thread beside the labels.
        window = read_window.fn(
            Settings(
                model_name="pg-model",
                state_dir=tmp_path / name,
                prediction_log_url=log.url,
                drift_max_rows=10,
                ood_max_queries=10,
            ),
            25,
        )
        assert (window.requests, len(window.sample), len(window.labels)) == (
            25,
            10,
            len(log.labelled(bounds).rows),
        ), name
        assert set(window.sample["role"]) == {"champion"}, name
        # blocks of 3 consecutive requests (PostgreSQL: an OR of id ranges)
        blocks = log.sample(bounds, max_rows=8, seed=5, block_rows=3)
        assert len(blocks) == 8 and blocks["request_id"].is_unique, name
        reads[name] = (
            bounds.requests,
            bounds.shadow_rows,
            len(sample),
            sorted(sample["request_id"]),
            sample["temp"].round(6).tolist() == sorted(sample["temp"].round(6).tolist()),
            sorted(blocks["request_id"]),
            list(zip(labelled["role"], labelled["label"].astype(float), strict=True)),
            log.prune(1_700_000_010.0, model_name="pg-model", batch_rows=4),
            log.window("pg-model").requests,
            log.count("other"),
            label_figures,
        )
        log.close()
    for receipt in receipts.values():
        assert (receipt.stored, receipt.already_labelled, receipt.unknown) == (
            ["r1"],
            ["r0"],
            ["nope"],
        )
    assert reads["postgres"][:3] == (25, 1, 10)  # the shadow row is in range, not counted
    assert reads["postgres"] == reads["sqlite"], reads
    # v1: r5..r29 but multiples of 3, 11 of them logged by ts 20, labelled r8 r16 r20 (r28
    # too young); v2: 8 answers and the r0 shadow row, labelled r12 r0 (r24 too young).
    # Matured rows are counted by id up to the newest row logged by the cutoff: the r0
    # shadow row, appended after r29 with an older ts, is not among them (5, not 6), while
    # its label counts by its own ts.
    assert reads["postgres"][-1] == [
        ("1", {"champion": 17}, 11, 3, 4),
        ("2", {"challenger": 8, "shadow": 1}, 5, 2, 3),
    ]
    pg, lite = frames["postgres"], frames["sqlite"]
    assert len(pg) == 20 and list(pg.columns) == list(lite.columns)
    assert pg["request_id"].tolist() == lite["request_id"].tolist()
    for column in ("temp", "hr", "weathersit", "prediction", "label", "model_version", "role"):
        assert pg[column].astype(str).tolist() == lite[column].astype(str).tolist(), column


def test_replicas_stage_commits_and_readers_move_each_block_once_on_postgres(
    postgres: procs.PostgresCluster,
) -> None:
    """Two replicas' writers stage commits while three readers (monitors, /feedback) move
    them at once: every record lands in `predictions` exactly once, each writer's in the
    order it committed them, and nothing stays staged."""
    import threading

    import sqlalchemy as sa

    from predlog.log import GroupCommitWriter, PredictionLog, RowBlock

    url = postgres.url(postgres.create_database("predlog_staged"))
    writers = [PredictionLog(url) for _ in range(2)]
    readers = [PredictionLog(url) for _ in range(3)]
    done = threading.Event()
    moved: list[int] = []

    def write(w: int) -> None:
        writer = GroupCommitWriter(writers[w])
        for k in range(40):
            rows = [
                (f"w{w}-{k}-{i}", None, 1.7e9 + k, "m", "1", "champion", (k, i), 1.0, 2.0, None)
                for i in range(5)
            ]
            writer.submit(blocks=[RowBlock(("k", "i"), rows)]).result(timeout=30)
        writer.close()

    def read(reader: PredictionLog) -> None:
        while not done.is_set():
            moved.append(reader.catch_up())
        moved.append(reader.catch_up())

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=read, args=(r,)) for r in readers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads[:2]:
            thread.join(120)
        done.set()
        for thread in threads[2:]:
            thread.join(120)
        assert sum(moved) == 2 * 40 * 5
        ids = [p.request_id for p in readers[0].predictions()]
        assert len(ids) == len(set(ids)) == 400
        for w in range(2):
            mine = [i for i in ids if i.startswith(f"w{w}-")]
            assert mine == [f"w{w}-{k}-{i}" for k in range(40) for i in range(5)]
        assert readers[0].predictions(request_ids=["w1-7-3"])[0].features == {"k": 7, "i": 3}
        with readers[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM prediction_blocks")).scalar() == 0
    finally:
        for log in (*writers, *readers):
            log.close()


def test_prediction_log_migrations_on_postgres(postgres: procs.PostgresCluster) -> None:
    """A log made before migrations is adopted with its rows; a new one reaches exactly the
    code's schema; replicas opening it at once upgrade it once; `driftloop log migrate`."""
    import threading

    import sqlalchemy as sa

    from predlog import migrations
    from predlog.log import PredictionLog, PredictionRecord
    from predlog.tables import predictions_table

    old_url = postgres.url(postgres.create_database("predlog_old"))
    engine = sa.create_engine(old_url)
    migrations.code_metadata().create_all(engine)  # what the code made before Alembic
    with engine.begin() as conn:
        conn.execute(
            predictions_table.insert(),
            [
                {
                    "request_id": f"old{i}",
                    "ts": 1.0e9 + i,
                    "model_name": "m",
                    "model_version": "1",
                    "role": "champion",
                    "features": {"x": i},
                    "prediction": i,
                    "latency_ms": 1.0,
                }
                for i in range(3)
            ],
        )
    assert migrations.current_revision(engine) is None
    engine.dispose()
    log = PredictionLog(old_url)
    try:
        assert migrations.current_revision(log.engine) == migrations.HEAD
        assert migrations.schema_differences(log.engine) == []
        assert [p.request_id for p in log.predictions()] == ["old0", "old1", "old2"]
    finally:
        log.close()

    new_url = postgres.url(postgres.create_database("predlog_new"))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_log(i: int) -> None:
        try:
            start.wait()
            replica = PredictionLog(new_url)
            replica.append([PredictionRecord(f"r{i}", "m", "1", "champion", {"x": i}, i, 1.0)])
            replica.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_log, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    engine = sa.create_engine(new_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text(f"SELECT * FROM {migrations.VERSION_TABLE}")).all()
            tables = set(sa.inspect(conn).get_table_names())
        assert [tuple(v) for v in versions] == [(migrations.HEAD,)]
        assert tables == {*migrations.TABLES, migrations.VERSION_TABLE}
        assert migrations.schema_differences(engine) == []
    finally:
        engine.dispose()

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")},
        "DRIFTLOOP_PREDICTION_LOG_URL": new_url,
    }
    driftloop = str(Path(sys.executable).parent / "driftloop")
    check = subprocess.run(
        [driftloop, "log", "migrate", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert f"revision {migrations.HEAD} (head)" in check.stdout


def test_a_quickly_filled_log_gets_fresh_planner_statistics_before_the_monitor_reads(
    postgres: procs.PostgresCluster,
) -> None:
    """Rows logged faster than autovacuum analyzes: the monitor's first read ANALYZEs the
    tables (the label join was planned for empty tables and ran for minutes, scale-out
    test), the next read does not again, and the window's labelled rows are all there."""
    import sqlalchemy as sa

    from predlog.log import FeedbackRecord, PredictionLog, PredictionRecord

    log = PredictionLog(postgres.url(postgres.create_database("predlog_stats")))
    try:
        with log.engine.connect() as conn:  # autovacuum off: only our ANALYZE can run
            for table in ("predictions", "feedback"):
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            conn.commit()
        n = 6_000
        log.append(
            predictions=[
                PredictionRecord(f"r{i}", "m", "1", "champion", {"x": float(i)}, 1.0, 1.0, 1e9 + i)
                for i in range(n)
            ],
            feedback=[FeedbackRecord(f"r{i}", "m", float(i), 2e9 + i) for i in range(n)],
        )
        assert log.catch_up() == n  # the staged commit moved into `predictions`, as a read does

        def analyzed() -> dict[str, int]:
            with log.engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT relname, analyze_count + autoanalyze_count "
                        "FROM pg_stat_user_tables WHERE relname IN ('predictions', 'feedback')"
                    )
                ).all()
            return {name: int(count) for name, count in rows}

        def changed() -> bool:  # a backend reports its row counts within seconds, not at once
            with log.engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT min(n_mod_since_analyze) FROM pg_stat_user_tables "
                        "WHERE relname IN ('predictions', 'feedback')"
                    )
                ).scalar()
            return rows is not None and rows >= n

        procs.wait_until(changed, 30, 0.5, "the row counts in pg_stat_user_tables")
        before = analyzed()
        bounds = log.window("m", rows=n)
        after = analyzed()
        assert after == {name: count + 1 for name, count in before.items()}
        frame = log.labelled_frame(bounds)
        assert analyzed() == after  # fresh now: one catalog query, no second ANALYZE
        assert log.refresh_statistics() == []
        assert len(frame) == n and frame["label"].astype(float).sum() == sum(range(n))
    finally:
        log.close()
