"""Retrains build on each other: a drift retrain trains on the champion's training data
(its data source plus the live rows it was trained on) and the new labelled window, each
row naming where it came from, at most `retrain_max_rows` live rows (newest kept)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from config.names import CHAMPION
from config.settings import Settings
from data.contract import BETWEEN, build_contract, validate
from data.live import (
    LIVE_LOGGED_AT,
    LIVE_REQUEST_ID,
    LIVE_SOURCE,
    accumulate_live_rows,
    append_live_rows,
)
from data.sources import Snapshot, load_table
from monitoring.policy import Action, Decision
from pipelines import monitor
from pipelines.monitor import champion_live_rows, read_registry, read_window, request_retrain
from pipelines.tracking import RETRAIN_DATA_ARTIFACTS
from pipelines.train import fetch_live_rows
from registry import Registry, VersionInfo

Monitored = Callable[..., tuple[Settings, Registry]]  # the `monitored` fixture (conftest)


SCHEMA = {"features": ["x1", "x2"], "target": "y"}


def live(source: str, ids: range, logged_from: float, x1: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x1": [x1] * len(ids),
            "x2": [float(i) for i in ids],
            "y": [1.0] * len(ids),
            LIVE_SOURCE: source,
            LIVE_LOGGED_AT: [logged_from + k for k in range(len(ids))],
            LIVE_REQUEST_ID: [f"r{i}" for i in ids],
        }
    )


def test_accumulate_keeps_each_request_once_and_the_newest_rows() -> None:
    earlier = live("window A", range(0, 50), 1_000.0)
    fresh = live("window B", range(40, 100), 2_000.0)  # r40..r49 already in A
    rows = accumulate_live_rows(earlier, fresh, max_rows=1_000)
    assert len(rows) == 100 and rows[LIVE_REQUEST_ID].is_unique
    assert rows[LIVE_SOURCE].value_counts().to_dict() == {"window B": 50, "window A": 50}
    newest = accumulate_live_rows(earlier, fresh, max_rows=60)
    assert list(newest[LIVE_REQUEST_ID]) == [f"r{i}" for i in range(40, 100)]
    assert list(newest[LIVE_LOGGED_AT]) == sorted(newest[LIVE_LOGGED_AT])
    # Rows of files written before sources were recorded: no time, so the oldest.
    legacy = earlier.drop(columns=[LIVE_LOGGED_AT, LIVE_REQUEST_ID]).assign(**{LIVE_SOURCE: "old"})
    mixed = accumulate_live_rows(legacy, fresh, max_rows=70)
    assert mixed[LIVE_SOURCE].value_counts().to_dict() == {"window B": 60, "old": 10}
    assert accumulate_live_rows(earlier.iloc[0:0], fresh.iloc[0:0], 10).empty


def test_contract_failures_name_each_window_the_rows_came_from(tmp_path: Path) -> None:
    base = pd.DataFrame({"x1": np.linspace(0, 1, 200), "x2": np.linspace(0, 9, 200), "y": 1.0})
    snapshot = Snapshot(
        frame=base,
        target="y",
        features=("x1", "x2"),
        time_column=None,
        digest="d",
        source="train.csv",
        task="regression",
        categorical=(),
        numeric=("x1", "x2"),
    )
    rows = accumulate_live_rows(
        live("window A", range(0, 20), 1_000.0, x1=5.0),
        live("window B", range(20, 30), 2_000.0, x1=0.5),
        max_rows=100,
    )
    path = tmp_path / "retrain.parquet"
    rows.to_parquet(path)
    combined = append_live_rows(snapshot, load_table(path), str(path))
    assert list(combined.frame.columns) == ["x1", "x2", "y"]  # bookkeeping columns dropped
    contract = build_contract(base, "y", None)
    report = validate(combined.frame, contract, provenance=combined.provenance)
    assert report.failure("x1", BETWEEN).origins == {
        "train.csv": 0,
        "window A": 20,
        "window B": 0,
    }


def version(tags: dict[str, str], run_id: str | None = None) -> VersionInfo:
    return VersionInfo("m", "4", run_id, "src", (CHAMPION,), tags, datetime.now(UTC))


def test_the_champions_live_rows_come_from_its_file_or_its_run(
    tmp_path: Path, mlflow_store: tuple[str, str]
) -> None:
    uri, run_id = mlflow_store
    settings = Settings(model_name="m", state_dir=tmp_path, tracking_uri=uri)
    rows, note = champion_live_rows(settings, version({}), SCHEMA)  # trained on its source only
    assert rows.empty and note is None
    path = tmp_path / "d-1.parquet"
    live("window A", range(0, 5), 1_000.0).to_parquet(path)
    rows, note = champion_live_rows(settings, version({"recent_rows_added": str(path)}), SCHEMA)
    assert note is None and list(rows[LIVE_SOURCE]) == ["window A"] * 5

    # The file is gone: the copy the training run logged is read instead.
    mlflow.MlflowClient(tracking_uri=uri).log_artifact(run_id, str(path), RETRAIN_DATA_ARTIFACTS)
    path.unlink()
    tagged = version({"recent_rows_added": str(path)}, run_id)
    rows, note = champion_live_rows(settings, tagged, SCHEMA)
    assert note is None and len(rows) == 5

    # Gone everywhere: the retrain goes on with the new window and says so.
    lost = version({"recent_rows_added": str(tmp_path / "d-9.parquet")}, run_id)
    rows, note = champion_live_rows(settings, lost, SCHEMA)
    assert rows.empty and note is not None and "d-9.parquet" in note and "new window only" in note

    # A file of an older version (no source column): its rows are named after the file.
    old = tmp_path / "old.parquet"
    live("x", range(0, 3), 0.0).drop(columns=LIVE_SOURCE).to_parquet(old)
    rows, _ = champion_live_rows(settings, version({"recent_rows_added": str(old)}), SCHEMA)
    assert set(rows[LIVE_SOURCE]) == {f"live window {old}"}


def test_a_second_drift_retrain_keeps_the_first_retrains_rows(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 retrained on window A gave v2; v2's drift retrain trains on A and B."""
    settings, registry = monitored("accumulate", monitor_window_rows=100, retrain_max_rows=150)
    monkeypatch.setattr("prefect.events.emit_event", lambda *a, **k: None)
    requested: list[str] = []
    monkeypatch.setattr(
        monitor,
        "trigger_retrain",
        lambda s, champion, uri, idempotency_key=None: requested.append(uri) or "run-x",
    )
    decision = Decision(Action.RETRAIN, "drift", {})

    def log_window(first: int, t0: float) -> None:
        from predlog.log import FeedbackRecord, PredictionLog

        rows, labels = [], []
        for i in range(first, first + 100):
            rid = f"q{i}"
            features = {"x1": float(i), "x2": 1.0}
            rows.append((rid, None, t0 + i, settings.model_name, "1", "champion", features, 0.0, 1))
            labels.append(FeedbackRecord(rid, settings.model_name, float(i), t0 + i + 1))
        log = PredictionLog(settings.resolved_prediction_log_url())
        log.append(rows=rows, feedback=labels)
        log.close()

    def retrain(decision_id: str) -> pd.DataFrame:
        state = read_registry.fn(settings)
        window = read_window.fn(settings, settings.monitor_window_rows)
        request_retrain(settings, registry, decision, window, state, {}, decision_id)
        # The trainer gets an artifact URI, not a path: it reads the rows from MLflow.
        assert requested[-1].startswith("runs:/") and not Path(requested[-1]).exists()
        return pd.read_parquet(fetch_live_rows(settings, requested[-1]))

    t0 = time.time() - 3_600
    log_window(0, t0)
    first = retrain("d-first")
    assert set(first[LIVE_SOURCE]) == {f"live window {requested[0]}"} and len(first) == 100
    # The retrain registered v3 from that file and it became champion.
    registry.set_tags("2", {"recent_rows_added": str(requested[0])})
    registry.set_alias(CHAMPION, 2, "promoted on live labels")

    log_window(100, t0)
    second = retrain("d-second")
    assert len(second) == 150  # retrain_max_rows: the newest 150 of 200
    assert second[LIVE_SOURCE].value_counts().to_dict() == {
        f"live window {requested[1]}": 100,
        f"live window {requested[0]}": 50,
    }
    assert list(second[LIVE_REQUEST_ID]) == [f"q{i}" for i in range(50, 200)]
    move = registry.history.list(limit=1)[0]
    assert move.action == "retrain"
    assert "150 labelled live rows added (100 from this window, 50 carried from v2" in move.reason


def test_downloaded_live_rows_unused_for_a_week_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retrain's live rows are downloaded into the temporary folder once; folders not
    used for `LIVE_DOWNLOAD_KEEP_S` go at the next fetch, a cached file in use stays."""
    import hashlib
    import os

    from pipelines import train

    monkeypatch.setattr(train.tempfile, "gettempdir", lambda: str(tmp_path))
    downloads = tmp_path / "driftloop-live-rows"
    location = "runs:/abc/retrain_data/live.parquet"
    mine = downloads / hashlib.sha256(location.encode()).hexdigest()[:16]
    mine.mkdir(parents=True)
    (mine / "live.parquet").write_bytes(b"rows")
    old, fresh = downloads / "old", downloads / "fresh"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "live.parquet").write_bytes(b"rows")
    week_ago = time.time() - train.LIVE_DOWNLOAD_KEEP_S - 60
    os.utime(old, (week_ago, week_ago))
    os.utime(mine, (week_ago, week_ago))

    got = fetch_live_rows(Settings(state_dir=tmp_path / "state"), location)

    assert got == mine / "live.parquet" and got.read_bytes() == b"rows"  # no download
    assert not old.exists() and fresh.exists()
    assert mine.stat().st_mtime > week_ago + 3_600  # touched: in use
