"""Drift over time in Evidently's own UI: a local Evidently workspace fed by every check.

One Evidently project per model (named after it) in a local workspace folder (the stack's
``<state>/evidently``, served by ``evidently ui --workspace``). Each monitor check adds one
run, named after the check's decision, with:

- the check's drift report (every ``ValueDrift`` and ``DriftedColumnsCount`` with their
  widgets, as in the HTML report) when drift was measured, and
- the check's own figures, which are not Evidently metrics (drift share as the policy
  judged it, OOD rate, live metric per alias, the versions holding each alias, the
  decision as one 0/1 column per action), each as an Evidently ``MeanValue`` over a
  one-row frame of those figures: the mean of one value is that value, so the dashboard's
  panels draw exactly the figures the decision rested on.

Tags (``decision:retrain``, ``champion:v3``...) and metadata (model, versions, window,
OOD rate, decision and reason) travel with each run, so the UI's run list says what
happened without opening it. Old runs are pruned to a count (`prune_runs`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from config.names import ALIASES

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardModel
    from evidently.ui.workspace import Workspace

logger = logging.getLogger(__name__)

ACTIONS = ("retrain", "retrain_pending", "promote", "rollback", "retire_challenger")
"""The policy's actions other than none (monitoring.policy.Action): one 0/1 column each."""
DRIFT_TITLE = "Drift share (share of features drifted)"
OOD_TITLE = "Out-of-distribution rate"
LIVE_TITLE = "Live metric per alias"
VERSIONS_TITLE = "Version holding each alias"
DECISIONS_TITLE = "Decisions (1 = taken at that check)"
WINDOW_TITLE = "Requests in the window"


def figure_row(check: Mapping[str, Any], thresholds: Mapping[str, float]) -> dict[str, float]:
    """The check's figures as one row of numbers (figures the check lacks are left out).

    `thresholds` holds ``drift_share_threshold`` and ``ood_rate_threshold`` (shares,
    0-1), drawn beside their figures.
    """
    figures = check.get("figures") or {}
    row: dict[str, Any] = {
        "drift_share": figures.get("drift_share"),
        "drifted_features": (
            len(figures.get("drifted_features") or [])
            if figures.get("drift_share") is not None
            else None
        ),
        "prediction_drift_score": figures.get("prediction_drift_score"),
        "ood_rate": figures.get("ood_rate"),
        "window_rows": figures.get("window_rows"),
        **{f"{role}_metric": figures.get(f"{role}_metric") for role in ALIASES},
        **{f"{role}_version": _number(figures.get(f"{role}_version")) for role in ALIASES},
        **{name: thresholds.get(name) for name in ("drift_share_threshold", "ood_rate_threshold")},
    }
    action = (check.get("decision") or {}).get("action", "none")
    row.update({f"decision_{name}": 1.0 if action == name else 0.0 for name in ACTIONS})
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }


def _number(version: Any) -> float | None:
    try:
        return float(version)
    except (TypeError, ValueError):
        return None


def run_name(check: Mapping[str, Any]) -> str:
    """The run's title: model, decision, versions, window, drift and OOD figures.

    ``bikeshare-demand: retrain | champion v3, challenger v4, previous v2 | window 2,000
    requests | drift 62.5% | OOD 3.1% | 2026-12-01T15:04:00+00:00``
    """
    figures = check.get("figures") or {}
    action = (check.get("decision") or {}).get("action", "none")
    versions = ", ".join(
        f"{role} v{figures[f'{role}_version']}"
        for role in ALIASES
        if figures.get(f"{role}_version")
    )
    parts = [f"{check.get('model_name', '?')}: {action}", versions or "no champion"]
    if figures.get("window_rows") is not None:
        parts.append(f"window {int(figures['window_rows']):,} requests")
    for label, key in (("drift", "drift_share"), ("OOD", "ood_rate")):
        value = figures.get(key)
        parts.append(f"{label} {'-' if value is None else f'{value:.1%}'}")
    parts.append(str(check.get("at", "")))
    return " | ".join(parts)


def run_tags(check: Mapping[str, Any]) -> list[str]:
    """Tags shown on the run: the decision and the version holding each alias."""
    figures = check.get("figures") or {}
    action = (check.get("decision") or {}).get("action", "none")
    tags = [f"decision:{action}"]
    tags += [
        f"{role}:v{figures[f'{role}_version']}"
        for role in ALIASES
        if figures.get(f"{role}_version")
    ]
    if check.get("drift"):
        tags.append("drift-report")
    return tags


def run_metadata(check: Mapping[str, Any], check_id: str) -> dict[str, str]:
    """Metadata shown on the run (strings: the UI filters on them)."""
    figures = check.get("figures") or {}
    decision = check.get("decision") or {}
    meta = {
        "model": str(check.get("model_name", "")),
        "check_id": check_id,
        "checked_at": str(check.get("at", "")),
        "decision": str(decision.get("action", "none")),
        "reason": str(decision.get("reason", ""))[:2000],
        "window_rows": str(figures.get("window_rows", "")),
        "drift_share": str(figures.get("drift_share", "")),
        "ood_rate": str(figures.get("ood_rate", "")),
        "metric": str(figures.get("metric_name", "")),
        "acted": str(check.get("acted") or ""),
        "report_html": str(check.get("report_html") or ""),
    }
    for role in ALIASES:
        meta[f"{role}_version"] = str(figures.get(f"{role}_version") or "")
    return meta


def check_report_run(
    check: Mapping[str, Any],
    thresholds: Mapping[str, float],
    check_id: str,
    drift: Snapshot | None = None,
) -> Snapshot:
    """One run for the check: its figures (``MeanValue`` per figure over a one-row frame),
    followed by the drift report's metrics and widgets when there is one."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.report import Snapshot
    from evidently.metrics import MeanValue

    row = figure_row(check, thresholds)
    frame = pd.DataFrame([row])
    report = Report([MeanValue(column=column) for column in row])
    at = check.get("at")
    timestamp = datetime.fromisoformat(at) if at else None
    run = report.run(
        Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(row))),
        None,
        timestamp=timestamp,
        metadata=run_metadata(check, check_id),
        tags=run_tags(check),
        name=run_name(check),
    )
    model = run.to_snapshot_model()
    # One counter widget for the figures instead of a bar chart per single value.
    model.widgets = [figures_widget(check)]
    if drift is not None:
        other = drift.to_snapshot_model()
        model.metric_results = {**model.metric_results, **other.metric_results}
        model.top_level_metrics = [
            *model.top_level_metrics,
            *[m for m in other.top_level_metrics if m not in model.top_level_metrics],
        ]
        model.widgets = [*model.widgets, *(_slim(w) for w in other.widgets)]
        model.tests_widgets = [*model.tests_widgets, *other.tests_widgets]
    for result in model.metric_results.values():
        result.widget = None  # a copy of `widgets`, which the UI shows; the values stay
    return Snapshot.load_model(model)


def figures_widget(check: Mapping[str, Any]) -> Any:
    """The check's figures and decision as one Evidently counter widget (the run's page)."""
    from evidently.legacy.renderers.html_widgets import CounterData, counter

    figures = check.get("figures") or {}
    decision = check.get("decision") or {}

    def share(key: str) -> str:
        value = figures.get(key)
        return "-" if value is None else f"{value:.1%}"

    counters = [
        CounterData("decision", str(decision.get("action", "none"))),
        CounterData("requests in the window", f"{figures.get('window_rows') or 0:,}"),
        CounterData("drift share", share("drift_share")),
        CounterData("OOD rate", share("ood_rate")),
    ]
    metric = figures.get("metric_name") or "live metric"
    for role in ALIASES:
        version = figures.get(f"{role}_version")
        if version:
            value = figures.get(f"{role}_metric")
            shown = "-" if value is None else f"{value:.4g}"
            counters.append(CounterData(f"{role} v{version} {metric}", shown))
    return counter(counters=counters, title=str(decision.get("reason", ""))[:300])


def _slim(widget: Any) -> Any:
    """The widget without Plotly's per-figure theme (`layout.template`, ~70% of a drift
    run's bytes, repeated in every chart): the charts draw in Plotly's default style."""
    from evidently.legacy.model.widget import BaseWidgetInfo

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            layout = node.get("layout")
            if isinstance(layout, dict):
                layout.pop("template", None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    data = widget.dict()
    strip(data)
    return BaseWidgetInfo.parse_obj(data)


def dashboard(metric_name: str | None) -> DashboardModel:
    """The project's dashboard: the figures over time, one panel per question."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel, text_panel

    def value(column: str, legend: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": column})

    metric = metric_name or "primary metric"
    panels = [
        text_panel(
            "driftloop monitor checks",
            "One run per monitor check: its figures, its decision (run tags) and, when drift "
            "was measured, its Evidently drift report (open a run under Reports).",
        ),
        line_plot_panel(
            DRIFT_TITLE,
            [
                value("drift_share", "drift share"),
                value("drift_share_threshold", "retrain threshold"),
            ],
            description="Features drifted / features, as the policy judged it",
            size="half",
        ),
        line_plot_panel(
            OOD_TITLE,
            [value("ood_rate", "OOD rate"), value("ood_rate_threshold", "retrain threshold")],
            description="Share of the window's rows far from the champion's training data",
            size="half",
        ),
        line_plot_panel(
            LIVE_TITLE,
            [value(f"{role}_metric", role) for role in ALIASES],
            description=f"Live {metric} on labelled requests (previous: its holdout figure "
            "when it has no live rows)",
            size="half",
        ),
        line_plot_panel(
            VERSIONS_TITLE,
            [value(f"{role}_version", role) for role in ALIASES],
            description="Steps are promotions and rollbacks",
            size="half",
        ),
        bar_plot_panel(
            DECISIONS_TITLE,
            [value(f"decision_{name}", name) for name in ACTIONS],
            description="What each check decided (none = no bar)",
            size="half",
            stacked=True,
        ),
        line_plot_panel(
            WINDOW_TITLE,
            [value("window_rows", "requests"), value("drifted_features", "drifted features")],
            size="half",
        ),
    ]
    tab = DashboardTabModel(title="Drift over time", panels=[p.id for p in panels])
    return DashboardModel(tabs=[tab], panels=panels)


def open_workspace(folder: Path) -> Workspace:
    from evidently.ui.workspace import Workspace

    folder.mkdir(parents=True, exist_ok=True)
    return Workspace(str(folder))


def project_for(workspace: Workspace, model_name: str, metric_name: str | None = None) -> Any:
    """The model's project (created with its dashboard on first use)."""
    from evidently.sdk.models import ProjectModel

    found = workspace.search_project(model_name)
    if found:
        return found[0]
    project = workspace.add_project(
        ProjectModel(
            name=model_name,
            description=f"driftloop monitor checks of {model_name}: drift, OOD rate, live "
            "metrics and decisions over time",
        )
    )
    workspace.save_dashboard(project.id, dashboard(metric_name))
    return project


def prune_runs(workspace: Workspace, project_id: Any, keep: int) -> int:
    """Delete the project's oldest runs beyond the newest `keep`; returns how many.

    Run ids are UUIDv7 (time-ordered), so the newest runs are the largest ids."""
    runs = sorted(workspace.list_runs(project_id), key=lambda i: uuid.UUID(str(i)))
    old = runs[: max(len(runs) - keep, 0)]
    for run_id in old:
        workspace.delete_run(project_id, run_id)
    return len(old)


def add_check(
    folder: Path,
    check: Mapping[str, Any],
    check_id: str,
    thresholds: Mapping[str, float],
    keep_runs: int | None,
    drift_run_file: Path | None = None,
) -> str | None:
    """Add the check as a run of its model's project; prune to `keep_runs` (None = keep all).

    `drift_run_file` is the loadable report run `monitoring.drift.save_report` wrote, when
    drift was measured. Never raises: returns a sentence for the check's messages when the
    workspace could not be written (the check itself stands). A retry of the same check
    (same `check_id` as the newest run) adds nothing.
    """
    try:
        from evidently.core.report import Snapshot

        workspace = open_workspace(Path(folder))
        figures = check.get("figures") or {}
        project = project_for(workspace, str(check["model_name"]), figures.get("metric_name"))
        runs = sorted(workspace.list_runs(project.id), key=lambda i: uuid.UUID(str(i)))
        if runs:
            newest = workspace.get_run(project.id, runs[-1])
            if newest is not None and newest.metadata.get("check_id") == check_id:
                return None
        drift = None
        if drift_run_file is not None and Path(drift_run_file).is_file():
            drift = Snapshot.load(drift_run_file)
        workspace.add_run(project.id, check_report_run(check, thresholds, check_id, drift))
        if keep_runs is not None:
            pruned = prune_runs(workspace, project.id, keep_runs)
            if pruned:
                logger.info("Evidently workspace: pruned %d old runs of %s", pruned, project.name)
    except Exception as exc:  # the workspace is a view: never fail the check over it
        logger.warning("Evidently workspace not updated: %s", exc, exc_info=True)
        return f"Evidently workspace {folder} not updated ({type(exc).__name__}: {exc})"
    return None
