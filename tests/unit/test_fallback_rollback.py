"""Automatic rollback of a champion the serving fallback had to answer for.

The service answers with `previous` when the champion raises or returns NaN/inf (rows
with role `fallback`) and never moves an alias; the monitor counts those rows for the
current champion and rolls back through the registry's compare-and-swap. Policy on plain
data; counting on a real SQLite prediction log; the move on a SQLite MLflow store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest

from config.names import CHAMPION, PREVIOUS
from config.settings import Settings
from monitoring.policy import Action, Figures, Thresholds, decide, thresholds_from
from pipelines import monitor
from predlog import migrations
from predlog.fallbacks import fallback_counts, record_fallback_event
from predlog.log import PredictionLog, PredictionRecord
from registry import Registry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = Thresholds()


def failing(fallbacks: int, requests: int = 2000, **extra: Any) -> Figures:
    values: dict[str, Any] = dict(
        now=NOW,
        champion_version="7",
        previous_version="6",
        champion_requests=requests,
        champion_fallback_rows=fallbacks,
        fallback_error="ValueError: Input contains NaN",
    )
    values.update(extra)
    return Figures(**values)


# -- the policy ------------------------------------------------------------------------------


def test_a_champion_failing_above_the_share_is_rolled_back_with_the_reason() -> None:
    decision = decide(failing(38), T)
    assert decision.action is Action.ROLLBACK
    assert (decision.from_version, decision.to_version) == ("7", "6")
    assert decision.reason == (
        "champion v7 failed 38 of 2,000 requests in the window (1.9%): answered by v6 "
        "— ValueError: Input contains NaN"
    )
    assert decision.figures["champion_fallback_share"] == pytest.approx(0.019)


def test_few_failures_are_a_note_not_a_rollback() -> None:
    below_share = decide(failing(10), T)  # 0.5 % < 1 %
    assert below_share.action is Action.NONE
    assert "below the 1.0% / 5-request fallback rollback threshold" in below_share.reason
    too_few = decide(failing(3, requests=50), T)  # 6 % but only 3 requests
    assert too_few.action is Action.NONE
    assert decide(failing(0), T).action is Action.NONE
    assert "failed" not in decide(failing(0), T).reason


def test_without_a_previous_version_there_is_nothing_to_roll_back_to() -> None:
    decision = decide(failing(500, previous_version=None), T)
    assert decision.action is Action.NONE
    assert "no previous version to roll back to" in decision.reason


def test_a_failing_champion_is_rolled_back_before_a_challenger_is_promoted() -> None:
    figures = failing(
        100,
        challenger_version="8",
        challenger_metric=10.0,
        champion_metric=50.0,
        challenger_labelled_rows=500,
        champion_labelled_rows=500,
    )
    decision = decide(figures, T)
    assert decision.action is Action.ROLLBACK
    assert any("challenger v8" in note for note in decision.notes)
    # The threshold is a setting: at 10 % the same figures promote instead.
    assert decide(figures, replace(T, fallback_rollback_share=0.1)).action is Action.PROMOTE


def test_the_fallback_threshold_is_a_share() -> None:
    with pytest.raises(ValueError, match="fallback_rollback_share is a share"):
        Thresholds(fallback_rollback_share=1.5)


# -- counting on a real prediction log --------------------------------------------------------


def rows(version: str, role: str, n: int, ts: float, prefix: str) -> list[PredictionRecord]:
    return [
        PredictionRecord(f"{prefix}-{i}", "bikes", version, role, {"temp": 1.0}, 1.0, 2.0, ts=ts)
        for i in range(n)
    ]


@pytest.fixture()
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    opened = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    yield opened
    opened.close()


def test_counts_only_the_current_champions_failures_since_it_took_the_alias(
    log: PredictionLog,
) -> None:
    promoted = time.time() - 600
    log.append(rows("6", "fallback", 40, promoted - 60, "old"))  # v6 answered for v5 before
    log.append(rows("7", "champion", 1962, promoted + 1, "ok"))
    log.append(rows("6", "fallback", 38, promoted + 2, "failed"))
    log.append(rows("7", "shadow", 30, promoted + 3, "shadow"))  # never counted
    other = [replace(r, model_name="other") for r in rows("6", "fallback", 50, promoted + 4, "x")]
    log.append(other)
    record_fallback_event(log, "bikes", "5", "6", "KeyError: old", ts=promoted - 60)
    record_fallback_event(log, "bikes", "7", "6", "ValueError: Input contains NaN")
    counts = fallback_counts(log, "bikes", "7", "6", since=promoted, rows=5000)
    assert (counts.champion_rows, counts.fallback_rows, counts.requests) == (1962, 38, 2000)
    assert counts.error == "ValueError: Input contains NaN"
    newest = fallback_counts(log, "bikes", "7", "6", since=promoted, rows=100)
    assert newest.requests == 100 and newest.fallback_rows == 38  # the newest 100
    assert fallback_counts(log, "bikes", "6", "7", since=None, rows=5000).fallback_rows == 0


def test_a_log_made_before_fallback_events_still_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = PredictionLog(url)
    old.append(rows("6", "fallback", 9, time.time(), "f"))
    with old.engine.begin() as conn:  # back to a log of before fallback events and migrations
        conn.exec_driver_sql("DROP TABLE fallback_events")
        conn.exec_driver_sql(f"DROP TABLE {migrations.VERSION_TABLE}")
    old.close()
    log = PredictionLog(url)  # opening it adds the table
    counts = fallback_counts(log, "bikes", "7", "6", since=None, rows=100)
    assert (counts.fallback_rows, counts.error) == (9, None)
    log.close()


# -- the monitor records the rollback through the registry's compare-and-swap ---------------


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "not a model", "model/MLmodel")
    registry = Registry("bikes", uri, move_wait_s=5)
    for _ in range(2):
        registry.register(f"runs:/{run.info.run_id}/model", run.info.run_id)
    registry.set_alias(CHAMPION, 1, "first")
    registry.promote(2, "beat v1 live")
    return registry


def test_the_monitor_rolls_a_failing_champion_back_once(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda name, **_: events.append(name))
    settings = Settings(
        model_name="bikes",
        state_dir=tmp_path,
        tracking_uri=registry.tracking_uri,
        prediction_log_url=f"sqlite:///{tmp_path / 'predictions.db'}",
    )
    log = PredictionLog(settings.resolved_prediction_log_url())
    now = time.time() + 1  # after v2 took the alias
    log.append(rows("2", "champion", 150, now, "ok"))
    log.append(rows("1", "fallback", 50, now, "failed"))
    record_fallback_event(log, "bikes", "2", "1", "ValueError: Input contains NaN")
    log.close()

    def check() -> tuple[Any, dict[str, Any]]:
        state = monitor.read_registry.fn(settings)
        found = monitor.read_fallbacks.fn(settings, state, None, None)
        figures = Figures(
            now=datetime.now(UTC),
            champion_version=state["versions"][CHAMPION].version,
            previous_version=state["versions"][PREVIOUS].version,
            **found,
        )
        return decide(figures, thresholds_from(settings)), state

    decision, state = check()
    assert decision.action is Action.ROLLBACK
    assert decision.reason.startswith("champion v2 failed 50 of 200 requests in the window")
    done = monitor.move_aliases(settings, registry, decision, state, {}, "monitor-fb-1")
    assert done == "rolled back: champion: 2 → 1, previous: 1 → 2"
    assert registry.aliases() == {CHAMPION: "1", PREVIOUS: "2"}
    recorded = registry.history.list(1)[0]
    assert recorded.action == "rollback" and recorded.actor == "monitor"
    assert "answered by v1 — ValueError: Input contains NaN" in recorded.reason
    assert events == ["driftloop.rollback"]
    # A retry of the same decision moves nothing; the next check sees no failures of v1.
    again = monitor.move_aliases(settings, registry, decision, state, {}, "monitor-fb-1")
    assert again == done and registry.aliases() == {CHAMPION: "1", PREVIOUS: "2"}
    decision, _ = check()
    assert decision.action is Action.NONE
    assert [m.action for m in registry.history.list()].count("rollback") == 1
