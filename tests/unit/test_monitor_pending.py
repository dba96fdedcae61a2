"""Drift without enough labels is a recorded state: `driftloop history` shows "retrain
pending" once per episode (not at every scheduled check), and a retried action does not
record it twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from config.names import CHAMPION
from config.settings import Settings
from monitoring.policy import RETRAIN_PENDING_PREFIX, Action, Decision
from pipelines.monitor import retrain_pending
from registry import AliasMove, VersionInfo

REASON = f"{RETRAIN_PENDING_PREFIX}: 0 of 100 labelled rows (drift share 0.67 ≥ 0.50 on 600 rows)"


class FakeHistory:
    def __init__(self) -> None:
        self.moves: list[AliasMove] = []

    def find(self, decision_id: str) -> AliasMove | None:
        return next((m for m in self.moves if decision_id and m.decision_id == decision_id), None)

    def append(self, move: AliasMove) -> str:
        self.moves.append(move)
        return f"run-{len(self.moves)}"


class FakeRegistry:
    def __init__(self) -> None:
        self.history = FakeHistory()
        self.tags: dict[str, dict[str, str]] = {}

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(version, {}).update(tags)


def champion(tags: dict[str, str]) -> VersionInfo:
    return VersionInfo(
        "credit", "1", "run", "models:/credit/1", ("champion",), tags, datetime.now(UTC)
    )


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda event, **_: sent.append(event))
    return sent


def test_retrain_pending_is_recorded_in_the_history_once_per_episode(
    tmp_path: Path, events: list[str]
) -> None:
    settings = Settings(model_name="credit", state_dir=tmp_path)
    registry: Any = FakeRegistry()
    decision = Decision(Action.RETRAIN_PENDING, REASON, {})
    figures = {"drift_share": 0.67, "labelled_rows": 0.0}

    said = retrain_pending(
        settings, registry, decision, {"versions": {CHAMPION: champion({})}}, figures, "d-1"
    )
    assert said == REASON
    [move] = registry.history.moves
    assert (move.action, move.reason, move.actor, move.moves) == (
        "retrain-pending",
        REASON,
        "monitor",
        {},
    )
    assert move.figures == figures
    assert events == ["driftloop.retrain.pending"]
    assert registry.tags["1"]["last_monitor_decision"] == REASON

    # A retry of the same decision (its tag not yet written) records and alerts nothing new.
    retrain_pending(
        settings, registry, decision, {"versions": {CHAMPION: champion({})}}, figures, "d-1"
    )
    assert len(registry.history.moves) == 1
    assert events == ["driftloop.retrain.pending"]

    # The next scheduled check of the same episode: the tag says it was recorded already.
    pending = champion({"last_monitor_decision": REASON})
    retrain_pending(settings, registry, decision, {"versions": {CHAMPION: pending}}, figures, "d-2")
    assert len(registry.history.moves) == 1
    assert events == ["driftloop.retrain.pending"]
