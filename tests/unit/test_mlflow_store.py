"""MLflow's SQLite store in WAL mode (`config.mlflow_store`): made so before MLflow opens
it, kept by MLflow, data untouched, and a store in use or a foreign file left alone."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from config.mlflow_store import sqlite_store_path, use_wal
from pipelines.tracking import configure_mlflow


def journal_mode(db: Path) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:////abs/state/mlflow.db", Path("/abs/state/mlflow.db")),
        ("sqlite:///relative/mlflow.db", Path("relative/mlflow.db")),
        ("sqlite:////abs/mlflow.db?timeout=20", Path("/abs/mlflow.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("http://127.0.0.1:5000", None),
        ("postgresql://u@h/mlflow", None),
        ("file:///tmp/mlruns", None),
    ],
)
def test_only_a_sqlite_file_is_a_store_path(uri: str, path: Path | None) -> None:
    assert sqlite_store_path(uri) == path


def test_a_new_store_is_created_in_wal_mode_and_mlflow_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "state" / "mlflow.db"
    assert use_wal(db) is True
    assert journal_mode(db) == "wal"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")  # MLflow's migrations run here
    experiment = client.create_experiment("wal")
    client.create_registered_model("m")
    assert client.get_experiment(experiment).name == "wal"
    assert journal_mode(db) == "wal"


def test_an_existing_store_switches_with_its_data(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("before")
    assert journal_mode(db) == "delete"  # MLflow's own default
    assert use_wal(db) is True
    assert journal_mode(db) == "wal"
    assert use_wal(db) is True  # idempotent
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment(experiment).name == "before"


def test_a_store_held_in_a_transaction_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (a INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO t VALUES (1)")
        assert use_wal(db, timeout_s=0.1) is False
        holder.execute("COMMIT")
    assert journal_mode(db) == "delete"
    assert use_wal(db) is True  # the next start succeeds


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a sqlite database, " * 100)
    assert use_wal(db) is False
    assert db.read_bytes() == b"not a sqlite database, " * 100


def test_the_embedded_store_of_a_training_run_is_in_wal_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # configure_mlflow also points this process's MLflow at the store: not the other tests'.
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_registry_uri", lambda uri: None)
    db = tmp_path / "state" / "mlflow.db"
    experiment = configure_mlflow(f"sqlite:///{db}", "embedded", tmp_path / "state" / "art")
    assert journal_mode(db) == "wal"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert client.get_experiment(experiment).name == "embedded"
