"""bench.training: the CPU budget that bounds a training flow's wall time, and the
MLflow store comparison (rollback journal vs WAL)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench.common import tree_cpu_s
from bench.training.flow import server_pids
from bench.training.mlflow_store import commit_ms, training_writes
from bench.training.run import CORES, cpu_budget, cpu_floor_s, store_table, task_table

PLAIN = {"work_s": 0.40, "work_cpu_s": 0.38}


def flow_run(label: str, process: float, mlflow: float, prefect: float) -> dict:
    cpu = {"process": process, "mlflow": mlflow, "prefect": prefect}
    return {"label": label, "seconds": 2.0, "cpu_s": cpu}


def test_the_floor_is_all_cpu_spread_over_every_core() -> None:
    assert cpu_floor_s(flow_run("second", 1.6, 0.3, 0.5)) == pytest.approx(2.4 / CORES)


def test_no_floor_and_no_table_without_the_servers_figures() -> None:
    lone = {"label": "second", "seconds": 2.0, "cpu_s": {"process": 1.6}}
    assert cpu_floor_s(lone) is None
    assert cpu_floor_s({"label": "second", "seconds": 2.0}) is None
    assert cpu_budget(PLAIN, flow_run("first", 4.0, 0.7, 0.7), lone) is None


def test_the_budget_table_adds_up_each_run_and_sets_its_floor_against_the_plain_fit() -> None:
    table = cpu_budget(PLAIN, flow_run("first", 4.0, 0.7, 0.7), flow_run("second", 1.6, 0.3, 0.5))
    assert table is not None
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["total"] == ["0.38", "5.40", "2.40"]
    floor = next(cells for name, cells in rows.items() if name.startswith("least wall time"))
    assert floor[1:] == [f"{5.4 / CORES:.2f}", f"{2.4 / CORES:.2f}"]
    assert rows["that least wall time × plain fit"][1:] == [
        f"{5.4 / CORES / 0.40:.2f}×",
        f"{2.4 / CORES / 0.40:.2f}×",
    ]


def test_server_pids_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_BENCH_SERVER_PIDS", "mlflow=12,prefect=34")
    assert server_pids() == {"mlflow": 12, "prefect": 34}
    monkeypatch.delenv("DRIFTLOOP_BENCH_SERVER_PIDS")
    assert server_pids() == {}


def test_tree_cpu_counts_this_process_and_is_zero_for_a_gone_one() -> None:
    sum(i * i for i in range(300_000))  # some CPU of our own
    assert tree_cpu_s(os.getpid()) > 0
    assert tree_cpu_s(2**22 + 12345) == 0.0  # above pid_max's default: no such process


def test_the_task_table_has_a_column_per_run_and_shares_of_the_second() -> None:
    runs = [
        {"label": "first", "seconds": 6.0, "tasks": {"fit": 1.0, "package": 2.0}},
        {"label": "second", "seconds": 2.0, "tasks": {"fit": 0.5, "package": 0.5}},
        {"label": "third", "seconds": 1.5, "tasks": {"fit": 0.5}, "tasks_covered_s": 1.0},
    ]
    table = task_table(runs, runs[1])
    assert table.columns == ["task", "first (s)", "second (s)", "third (s)", "share of the second"]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["package"] == ["2.00", "0.50", "–", "25%"]
    outside = next(cells for name, cells in rows.items() if name.startswith("outside tasks"))
    assert outside == ["3.00", "1.00", "0.50", "50%"]


def test_a_commit_is_timed_in_the_mode_asked_for(tmp_path: Path) -> None:
    for mode in ("delete", "wal"):
        assert commit_ms(tmp_path, mode) > 0
        db = tmp_path / f"{mode}-FULL.db"
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode
            assert conn.execute("SELECT count(*) FROM log").fetchone()[0] == 200


def test_one_training_runs_registry_writes_leave_a_version_behind_the_alias(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("bench", artifact_location=tmp_path.as_uri())
    client.create_registered_model("m")
    training_writes(client, experiment, "m", 7)
    version = client.get_model_version_by_alias("m", "champion")
    assert version.tags["bento"] == "bento of 7"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and len(run.data.metrics) == 8


def test_the_store_table_sets_wal_against_the_journal() -> None:
    table = store_table(
        {
            "rounds": 2,
            "trainings_per_round": 5,
            "commit_ms": {"journal": 2.0, "wal": 0.5},
            "median_wall_ms": {"journal": 200.0, "wal": 150.0},
            "median_server_cpu_ms": {"journal": 100.0, "wal": 90.0},
            "wall_ms": {"journal": [210.0, 190.0], "wal": [160.0, 140.0]},
        }
    )
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["one SQLite commit, no server (ms)"][:2] == ["2.00", "0.50"]
    wall = next(cells for name, cells in rows.items() if "client wall" in name)
    assert wall == ["200", "150", "0.75×"]
    assert "journal 210, 190; WAL 160, 140 ms" in table.note
