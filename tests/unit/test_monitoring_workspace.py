"""The Evidently workspace the monitor feeds: a real local workspace in a temp folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import measure_drift, report_run_file, save_report
from monitoring.workspace import (
    DECISIONS_TITLE,
    DRIFT_TITLE,
    LIVE_TITLE,
    OOD_TITLE,
    VERSIONS_TITLE,
    add_check,
    figure_row,
    open_workspace,
    run_name,
)

THRESHOLDS = {"drift_share_threshold": 0.5, "ood_rate_threshold": 0.2}


def check(at: str, action: str, drift_share: float, ood: float, **figures: Any) -> dict[str, Any]:
    """A check's result as `monitoring.report.CheckResult.to_dict` gives it."""
    return {
        "model_name": "bikes",
        "at": at,
        "decision": {"action": action, "reason": f"{action} because"},
        "figures": {
            "window_rows": 2000,
            "drift_share": drift_share,
            "drifted_features": ["x1"] if drift_share else [],
            "ood_rate": ood,
            "metric_name": "rmse",
            "champion_version": "3",
            "champion_metric": 4.5,
            "challenger_version": None,
            "challenger_metric": None,
            "previous_version": "2",
            "previous_metric": 5.0,
            **figures,
        },
        "drift": {"drift_share": drift_share} if drift_share is not None else None,
        "report_html": None,
        "messages": [],
    }


@pytest.fixture(scope="module")
def drift_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real drift report saved as the monitor saves it; the loadable run's path."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x1": rng.normal(0, 1, 300), "x2": rng.normal(0, 1, 300)})
    current = pd.DataFrame({"x1": rng.normal(2, 1, 300), "x2": rng.normal(0, 1, 300)})
    _, run = measure_drift(reference, current, ["x1", "x2"], [])
    _, report_json = save_report(run, tmp_path_factory.mktemp("report"))
    return report_run_file(report_json)


def test_figure_row_keeps_numbers_and_one_column_per_decision() -> None:
    row = figure_row(check("2026-12-01T10:00:00+00:00", "promote", 0.25, 0.05), THRESHOLDS)
    assert row["drift_share"] == 0.25 and row["ood_rate"] == 0.05
    assert row["champion_version"] == 3.0 and row["previous_metric"] == 5.0
    assert "challenger_metric" not in row and "challenger_version" not in row  # no challenger
    assert row["decision_promote"] == 1.0
    assert row["decision_retrain"] == 0.0 and row["decision_rollback"] == 0.0
    assert row["drift_share_threshold"] == 0.5


def test_run_name_says_model_decision_versions_window_and_ood() -> None:
    name = run_name(check("2026-12-01T10:00:00+00:00", "retrain", 0.625, 0.031))
    assert name.startswith("bikes: retrain | champion v3, previous v2 | window 2,000 requests")
    assert "drift 62.5%" in name and "OOD 3.1%" in name


def test_three_checks_make_a_project_with_three_runs_and_a_dashboard(
    tmp_path: Path, drift_report: Path
) -> None:
    folder = tmp_path / "evidently"
    checks = [
        check("2026-12-01T10:00:00+00:00", "none", 0.0, 0.01),
        check("2026-12-01T10:05:00+00:00", "retrain", 1.0, 0.4),
        check("2026-12-01T10:10:00+00:00", "none", None, None, window_rows=0),
    ]
    for i, found in enumerate(checks):
        snap = drift_report if found["drift"] else None
        assert add_check(folder, found, f"c{i}", THRESHOLDS, 100, snap) is None

    workspace = open_workspace(folder)
    projects = workspace.search_project("bikes")
    assert len(projects) == 1
    project = projects[0]
    runs = sorted(workspace.list_runs(project.id))
    assert len(runs) == 3
    stored = [workspace.get_run(project.id, r) for r in runs]
    assert [s.metadata["decision"] for s in stored] == ["none", "retrain", "none"]
    assert "decision:retrain" in stored[1].tags and "champion:v3" in stored[1].tags
    assert stored[1].name.startswith("bikes: retrain")
    assert stored[1].metadata["ood_rate"] == "0.4"
    # The drift report's own metrics ride along with the figures in runs that measured drift.
    kinds = [
        {r.metric_value_location.metric.params["type"] for r in s.metric_results.values()}
        for s in stored
    ]
    assert "evidently:metric_v2:ValueDrift" in kinds[1]
    assert "evidently:metric_v2:ValueDrift" not in kinds[2]
    ood = [
        r.value
        for r in stored[1].metric_results.values()
        if r.metric_value_location.metric.params.get("column") == "ood_rate"
    ]
    assert ood == [0.4]

    board = workspace.get_dashboard(project.id)
    titles = {p.title for p in board.panels}
    assert {DRIFT_TITLE, OOD_TITLE, LIVE_TITLE, VERSIONS_TITLE, DECISIONS_TITLE} <= titles
    assert [len(t.panels) for t in board.tabs] == [len(board.panels)]
    live = next(p for p in board.panels if p.title == LIVE_TITLE)
    assert [v.metric_labels["column"] for v in live.values] == [
        "champion_metric",
        "challenger_metric",
        "previous_metric",
    ]


def test_retry_of_the_same_check_adds_nothing(tmp_path: Path) -> None:
    found = check("2026-12-01T10:00:00+00:00", "none", 0.0, 0.01)
    for _ in range(2):
        assert add_check(tmp_path, found, "same", THRESHOLDS, None) is None
    workspace = open_workspace(tmp_path)
    assert len(workspace.list_runs(workspace.search_project("bikes")[0].id)) == 1


def test_retention_keeps_the_newest_runs(tmp_path: Path) -> None:
    for minute in range(5):
        found = check(f"2026-12-01T10:0{minute}:00+00:00", "none", 0.1 * minute, 0.0)
        assert add_check(tmp_path, found, f"c{minute}", THRESHOLDS, 2) is None
    workspace = open_workspace(tmp_path)
    project = workspace.search_project("bikes")[0]
    kept = [workspace.get_run(project.id, r) for r in sorted(workspace.list_runs(project.id))]
    assert [s.metadata["checked_at"] for s in kept] == [
        "2026-12-01T10:03:00+00:00",
        "2026-12-01T10:04:00+00:00",
    ]


def test_a_broken_workspace_is_a_message_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the workspace folder should be")
    message = add_check(blocker, check("2026-12-01T10:00:00+00:00", "none", 0.0, 0.0), "c", {}, 5)
    assert message is not None and str(blocker) in message


def test_saved_snapshot_loads_back(drift_report: Path) -> None:
    from evidently.core.report import Snapshot

    loaded = Snapshot.load(drift_report)
    assert loaded.metric_results
    assert json.loads(drift_report.read_text())["widgets"]


def test_a_run_stays_small(tmp_path: Path, drift_report: Path) -> None:
    """Retention counts runs: each must stay small (no repeated widgets or Plotly themes)."""
    found = check("2026-12-01T10:00:00+00:00", "none", 0.5, 0.01)
    assert add_check(tmp_path, found, "c", THRESHOLDS, None, drift_report) is None
    (run,) = tmp_path.glob("*/snapshots/*.json")
    assert run.stat().st_size < drift_report.stat().st_size / 2
    stored = json.loads(run.read_text())
    assert stored["widgets"][0]["type"] == "counter"
    assert len(stored["widgets"]) > 1  # the drift report's charts follow the figures


def test_the_monitor_adds_its_check_and_reports_a_broken_workspace(tmp_path: Path) -> None:
    from config.settings import Settings
    from monitoring.report import CheckResult
    from pipelines.monitor import add_to_workspace

    settings = Settings(state_dir=tmp_path, model_name="bikes", evidently_retention_runs=3)
    found = check("2026-12-01T10:00:00+00:00", "retrain", 0.75, 0.3)
    result = CheckResult(
        "bikes", found["at"], found["decision"], found["figures"], drift=found["drift"]
    )
    add_to_workspace(settings, result, "c1")
    assert result.messages == []
    workspace = open_workspace(settings.evidently_workspace())
    (project,) = workspace.search_project("bikes")
    (run,) = workspace.list_runs(project.id)
    assert workspace.get_run(project.id, run).metadata["drift_share"] == "0.75"

    broken = Settings(state_dir=tmp_path / "other", model_name="bikes")
    broken.state_path.mkdir()
    broken.evidently_workspace().write_text("a file where the workspace folder should be")
    add_to_workspace(broken, result, "c2")
    assert len(result.messages) == 1 and "Evidently workspace" in result.messages[0]
