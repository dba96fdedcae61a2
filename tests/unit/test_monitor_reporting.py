"""What a monitor check tells people (Prefect artifact, MLflow run name and link) and when
it does nothing on purpose (the same data judged again, a late scheduled run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from config.settings import Settings
from monitoring.policy import Thresholds
from monitoring.report import (
    CheckResult,
    already_judged,
    check_markdown,
    check_run_name,
    judged_state,
    report_title,
)
from pipelines import monitor
from pipelines.monitor import (
    late_scheduled_run,
    read_registry,
    read_window,
    run_artifact_url,
)
from predlog.log import FeedbackRecord, PredictionLog
from registry import Registry

Monitored = Callable[..., tuple[Settings, Registry]]


def result(action: str = "rollback", **figures: object) -> CheckResult:
    base = {
        "window_rows": 2000,
        "drift_share": 0.3636,
        "ood_rate": 1.0,
        "metric_name": "rmse",
        "champion_version": "3",
        "champion_metric": 41.23456,
        "champion_labelled_rows": 412,
        "previous_version": "2",
        "previous_metric": 30.5,
        "previous_labelled_rows": 380,
    }
    return CheckResult(
        "bike",
        "2026-12-01T15:04:05+00:00",
        {"action": action, "reason": "champion worse than previous by 35%"},
        {**base, **figures},
        acted="rolled back: champion 3 → 2",
    )


def test_the_run_is_named_by_its_decision() -> None:
    assert check_run_name(result("rollback")) == "rollback v3→v2 12-01 15:04"
    assert check_run_name(result("promote", challenger_version="4")) == (
        "promote v3→v4 12-01 15:04"
    )
    assert check_run_name(result("none")) == "none 12-01 15:04"
    assert check_run_name(result("retrain")) == "retrain 12-01 15:04"


def test_report_links_open_in_the_mlflow_ui_only_for_a_server() -> None:
    url = run_artifact_url("http://127.0.0.1:5000/", "7", "abc", "evidently")
    assert url == "http://127.0.0.1:5000/#/experiments/7/runs/abc/artifacts/evidently"
    assert run_artifact_url("sqlite:///x.db", "7", "abc", "evidently") is None


def test_the_artifact_rounds_figures_and_names_versions_and_thresholds() -> None:
    thresholds = Thresholds(drift_share_threshold=0.3, rollback_margin=0.1)
    text = check_markdown(result(), thresholds, "http://mlflow/#/experiments/1/runs/r/artifacts")
    assert "# bike: **rollback** (check at 2026-12-01T15:04:05+00:00)" in text
    assert "| drift share (features drifted) | 36.4% | drift at ≥ 30% |" in text
    assert "| OOD rate | 100.0% |" in text
    assert "| champion v3 rmse (live) | 41.23 on 412 labelled rows |" in text
    assert "| previous v2 rmse (live) | 30.5 on 380 labelled rows | rollback when" in text
    assert "≥ 10%" in text
    assert "0.3636" not in text and "41.23456" not in text
    assert "[open it in MLflow](http://mlflow/#/experiments/1/runs/r/artifacts)" in text
    assert "file://" not in text
    local = check_markdown(CheckResult("bike", "t", {}, {}, report_html="/s/drift.html"))
    assert "`/s/drift.html`" in local and "file://" not in local


def test_a_check_on_data_already_judged_does_nothing(monitored: Monitored) -> None:
    settings, _ = monitored("judged", monitor_window_rows=500)
    log = PredictionLog(settings.resolved_prediction_log_url())
    now = time.time()
    rows = [
        (f"r{i}", None, now - 100 + i * 0.1, "judged", "1", "champion", {"x1": 1.0}, 1.0, 1.0)
        for i in range(50)
    ]
    log.append(rows=rows)

    def state_now() -> dict:
        return judged_state(
            read_window.fn(settings, settings.monitor_window_rows), read_registry.fn(settings)
        )

    first = state_now()
    last = {"at": "t0", "judged": first, "decision": {"action": "none", "reason": "no drift"}}
    said = already_judged(last, state_now())
    assert said is not None and "nothing new since the check at t0" in said
    assert "no drift" in said
    # A check that acted, or failed, never makes the next one skip.
    assert already_judged({**last, "decision": {"action": "retrain"}}, first) is None
    assert already_judged({**last, "error": "registry down"}, first) is None
    # New traffic, a new label, or a moved alias: judged anew.
    log.append(feedback=[FeedbackRecord("r3", "judged", 1.0, now)])
    with_label = state_now()
    assert with_label != first and already_judged(last, with_label) is None
    log.append(rows=[("r50", None, now, "judged", "1", "champion", {"x1": 1.0}, 1.0, 1.0)])
    assert already_judged({**last, "judged": with_label}, state_now()) is None
    registry = Registry("judged", settings.resolved_tracking_uri())
    before = state_now()
    registry.promote(2, "by hand")
    assert already_judged({**last, "judged": before}, state_now()) is None
    log.close()


def _context(auto: bool, late_s: float) -> SimpleNamespace:
    expected = datetime.now(UTC) - timedelta(seconds=late_s)
    return SimpleNamespace(
        flow_run=SimpleNamespace(auto_scheduled=auto, expected_start_time=expected)
    )


def test_late_scheduled_runs_are_skipped_and_the_rest_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.context import FlowRunContext

    settings = Settings(monitor_interval_s=300)
    cases = {
        (True, 3_600): True,  # a catch-up run an hour late: skipped
        (True, 30): False,  # on time
        (False, 3_600): False,  # started by hand (or `prefect deployment run`): runs
    }
    for (auto, late_s), skipped in cases.items():
        context = _context(auto, late_s)
        monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls, c=context: c))
        reason = late_scheduled_run(settings)
        assert (reason is not None) == skipped, (auto, late_s, reason)
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: None))
    assert late_scheduled_run(settings) is None  # in process: no flow run
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: _context(True, 3_600)))
    assert "3,600 s late" in (late_scheduled_run(settings) or "")
    assert monitor.skipped_check(settings, "late")["decision"]["action"] == "none"


def test_the_html_report_says_what_it_is(tmp_path: Path) -> None:
    from monitoring.drift import title_report

    page = tmp_path / "drift.html"
    page.write_text("<html><head><title>Report</title></head><body><div>widgets</div></body>")
    title_report(page, *report_title(result("rollback")))
    text = page.read_text()
    assert "<title>bike: drift report — decision rollback (2026-12-01T15:04:05+00:00)</title>" in (
        text
    )
    assert text.index('id="driftloop-header"') < text.index("widgets")
    for words in ("champion v3, previous v2", "2,000 requests", "drift share 36.4%", "100.0%"):
        assert words in text, words
    assert "champion worse than previous by 35%" in text


def test_local_reports_keep_the_newest(tmp_path: Path) -> None:
    from pipelines.monitor import prune_local_reports

    names = [f"20261201T15{m:02d}00" for m in range(6)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "drift.html").write_text("x")
    assert prune_local_reports(tmp_path, None) == 0
    assert prune_local_reports(tmp_path, 4) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == names[2:]
    assert prune_local_reports(tmp_path / "missing", 4) == 0
