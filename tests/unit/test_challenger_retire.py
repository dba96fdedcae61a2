"""The monitor carries out RETIRE_CHALLENGER: the alias is cleared through the ledger,
with the reason recorded; a retried action changes nothing (SQLite MLflow store).

The decision itself (lost on live labels, or waited past `challenger_patience_s`) is
tested in test_monitoring_policy.py; the gate leaving losers without an alias in
test_gate.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest

from config.names import CHALLENGER, CHAMPION
from config.settings import Settings
from monitoring.policy import Action, Figures, Thresholds, decide
from pipelines import monitor
from registry import Registry


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
    registry.set_alias(CHALLENGER, 2, "gate")
    return registry


def test_a_starved_challenger_is_retired_once_with_its_reason(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda name, **_: events.append(name))
    settings = Settings(model_name="bikes", tracking_uri=registry.tracking_uri, state_dir=tmp_path)
    state = monitor.read_registry.fn(settings)
    now = datetime.now(UTC)
    figures = Figures(
        now=now,
        champion_version="1",
        challenger_version="2",
        challenger_created_at=now - timedelta(hours=30),
        challenger_labelled_rows=3,
    )
    decision = decide(figures, Thresholds(challenger_patience_s=86_400))
    assert decision.action is Action.RETIRE_CHALLENGER
    done = monitor.retire_challenger(settings, registry, decision, state, "monitor-retire-1")
    assert done == "retired challenger v2"
    assert registry.aliases() == {CHAMPION: "1"}
    recorded = registry.history.list(1)[0]
    assert (recorded.action, recorded.actor) == ("clear-challenger", "monitor")
    assert recorded.reason.startswith("challenger v2 waited 30.0 h for live labels")
    assert registry.get(2).tags["retired"] == decision.reason
    assert events == ["driftloop.challenger.retired"]
    # A retry (Prefect retries `act`) replays: no second record, no second event.
    again = monitor.retire_challenger(settings, registry, decision, state, "monitor-retire-1")
    assert again == done and events == ["driftloop.challenger.retired"]
    assert [m.action for m in registry.history.list()].count("clear-challenger") == 1
