"""A monitor check's record: the result it keeps, the figures MLflow logs, its title and
Markdown for people, and what it judged (a later check on the same data does nothing).
Pure: the flow writes them to MLflow, Prefect, the Evidently workspace and the state folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from monitoring.figures import MonitorWindow
from monitoring.policy import Thresholds


@dataclass
class CheckResult:
    """One monitor check: the figures, the decision and what was done about it."""

    model_name: str
    at: str
    decision: dict[str, Any]
    figures: dict[str, Any]
    drift: dict[str, Any] | None = None
    ood: dict[str, Any] | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    report_html: str | None = None
    report_json: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    """Label coverage and delay per version in the window (`PredictionLog.label_figures`),
    keyed by version, with the alias each version holds."""
    messages: list[str] = field(default_factory=list)
    acted: str | None = None
    error: str | None = None  # the check could not run (registry unreachable...)
    judged: dict[str, Any] | None = None
    """What the check judged (`judged_state`): a later check that finds the same does
    nothing."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def numeric_figures(figures: dict[str, Any]) -> dict[str, float]:
    """The numbers among the figures (MLflow metrics, history figures); an interval
    ``[low, high]`` becomes ``<name>_low`` and ``<name>_high``."""
    flat: dict[str, Any] = {}
    for k, v in figures.items():
        if isinstance(v, list | tuple) and len(v) == 2 and k.endswith("_interval"):
            flat[f"{k}_low"], flat[f"{k}_high"] = v
        else:
            flat[k] = v
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }


def report_title(result: CheckResult) -> tuple[str, list[str]]:
    """The HTML report's title and header lines: model, decision, versions, window, OOD."""
    figures = result.figures
    versions = ", ".join(
        f"{role} v{figures[f'{role}_version']}"
        for role in (CHAMPION, CHALLENGER, PREVIOUS)
        if figures.get(f"{role}_version")
    )
    action = result.decision.get("action", "none")
    title = f"{result.model_name}: drift report — decision {action} ({result.at})"
    lines = [
        f"Versions: {versions or 'none'}",
        f"Window: {_count(figures.get('window_rows'))} requests; drift share "
        f"{_share(figures.get('drift_share'))}; OOD rate {_share(figures.get('ood_rate'))}",
        f"Decision: {action} — {result.decision.get('reason', '')}",
    ]
    return title, lines


def check_run_name(result: CheckResult) -> str:
    """The monitoring run's name in the MLflow UI: the decision first, then when.
    ``rollback v3→v2 12-01 15:04``, ``retrain 12-01 15:09``, ``none 12-01 15:14``."""
    action = str(result.decision.get("action", "none"))
    figures = result.figures
    champion = figures.get("champion_version")
    target = {
        "rollback": figures.get("previous_version"),
        "promote": figures.get("challenger_version"),
    }.get(action)
    moves = f" v{champion}→v{target}" if champion and target else ""
    date, _, clock = result.at.partition("T")
    return f"{action}{moves} {date[5:10]} {clock[:5]}".strip()


def check_markdown(
    result: CheckResult, thresholds: Thresholds | None = None, report_url: str | None = None
) -> str:
    """The check for people: the decision and why, rounded figures with the versions they
    belong to and the thresholds they were held against, labels per version, the report."""
    t = thresholds or Thresholds()
    action = result.decision.get("action", "none")
    lines = [
        f"# {result.model_name}: **{action}** (check at {result.at})",
        "",
        str(result.decision.get("reason", "")),
        "",
        "| figure | value | threshold |",
        "|---|---|---|",
        *_window_rows(result.figures, t),
        *_live_rows(result.figures, t),
        *_prediction_rows(result, t),
        *_label_rows(result.labels),
    ]
    if result.acted:
        lines += ["", f"**Done:** {result.acted}"]
    if report_url:
        lines += ["", f"Evidently report: [open it in MLflow]({report_url})"]
    elif result.report_html:
        lines += [
            "",
            f"Evidently report (on the machine that ran the check): `{result.report_html}`",
        ]
    lines += [f"- {m}" for m in result.messages]
    return "\n".join(lines)


def _window_rows(figures: dict[str, Any], t: Thresholds) -> list[str]:
    """The window's size, drift share and OOD rate beside their thresholds."""
    rows = figures.get("window_rows")
    return [
        f"| requests in the window | {_count(rows)} | at least {t.min_window_rows:,} to judge |",
        f"| drift share (features drifted) | {_share(figures.get('drift_share'))} "
        f"| drift at ≥ {t.drift_share_threshold:.0%} |",
        f"| OOD rate | {_share(figures.get('ood_rate'))} | OOD at ≥ {t.ood_rate_threshold:.0%} |",
    ]


def _live_rows(figures: dict[str, Any], t: Thresholds) -> list[str]:
    """Each alias's live metric on its labelled rows, with the margin that moves it."""
    metric = figures.get("metric_name") or "live metric"
    lines = []
    for alias, rule in (
        (CHAMPION, ""),
        (CHALLENGER, f"promoted when better by ≥ {t.live_promotion_margin:.0%}"),
        (PREVIOUS, f"rollback when the champion is worse by ≥ {t.rollback_margin:.0%}"),
    ):
        version = figures.get(f"{alias}_version")
        if not version:
            continue
        value = figures.get(f"{alias}_metric")
        labelled = figures.get(f"{alias}_labelled_rows")
        shown = "-" if value is None else f"{value:.4g}"
        if labelled is not None:
            shown += f" on {_count(labelled)} labelled rows"
        lines.append(f"| {alias} v{version} {metric} (live) | {shown} | {rule} |")
    return lines


def _prediction_rows(result: CheckResult, t: Thresholds) -> list[str]:
    """The champion's fallback answers and each class's share of the predictions."""
    lines = []
    fallback = result.figures.get("champion_fallback_rows")
    if fallback:
        lines.append(
            f"| champion answers given by the fallback | {_count(fallback)} of "
            f"{_count(result.figures.get('champion_requests'))} "
            f"| rollback at ≥ {t.fallback_rollback_share:.0%} |"
        )
    shares = (result.drift or {}).get("prediction_shares") or {}
    for name, share in shares.get("current", {}).items():
        before = shares.get("reference", {}).get(name, 0.0)
        lines.append(f"| share predicted {name} | {before:.1%} → {share:.1%} | |")
    return lines


def _label_rows(labels: dict[str, Any]) -> list[str]:
    """Label coverage and delay per version (a table of its own), if any."""
    if not labels:
        return []
    lines = [
        "",
        "| version | aliases | rows | matured | labelled | coverage | label delay p50 / p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for version, entry in labels.items():
        lines.append(
            f"| v{version} | {', '.join(entry.get('aliases', [])) or '-'} "
            f"| {_count(entry['rows'])} | {_count(entry['matured_rows'])} "
            f"| {_count(entry['labelled_rows'])} | {_share(entry.get('coverage'))} "
            f"| {duration_text(entry.get('delay_p50_s'))} "
            f"/ {duration_text(entry.get('delay_p90_s'))} |"
        )
    return lines


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def duration_text(value: float | None, second_digits: int = 0) -> str:
    """A duration in seconds as people read it: "-", "42 s", "3.5 min", "1.2 h", "2.0 d"."""
    if value is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.{second_digits}f} s"


def judged_state(window: MonitorWindow, state: dict[str, Any]) -> dict[str, Any]:
    """What a check's decision rests on: the window's newest request and size, the labels
    per version, the aliases and the newest promote/retrain. JSON-comparable."""
    return {
        "last_id": window.bounds.last_id,
        "requests": window.bounds.requests,
        "labels": {v.model_version: v.labels for v in window.label_figures},
        "aliases": {alias: info.version for alias, info in state["versions"].items()},
        "moves": [move.decision_id or move.at for move in state["history"]],
    }


def already_judged(last: dict[str, Any] | None, judged: dict[str, Any]) -> str | None:
    """Why this check has nothing to do (the last check judged the same requests, labels
    and aliases and decided nothing), or None. A check that acted or failed is never
    a reason to skip: its action changed the aliases or history anyway."""
    if not last or last.get("error") or last.get("judged") != judged:
        return None
    if (last.get("decision") or {}).get("action", "none") != "none":
        return None
    return (
        f"nothing new since the check at {last.get('at')}: the same requests (newest id "
        f"{judged['last_id']}), labels and aliases, judged then: "
        f"{(last.get('decision') or {}).get('reason', '')}"
    )
