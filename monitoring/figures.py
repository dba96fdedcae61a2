"""A monitor check's figures, gathered from the window it read: drift and OOD of the
champion's answers against its training reference, and live metrics per version from the
labelled rows. Pure: the flow reads the prediction log and the registry, hands the rows
and the versions in, and gives the few reads this needs (the reference, logged scores,
the OOD index) as plain functions (`Sources`), so the tests give frames and lambdas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from config.names import CHALLENGER, CHAMPION, PREVIOUS, SHADOW
from monitoring.metrics import PrimaryMetric, primary_metric
from monitoring.policy import Figures

if TYPE_CHECKING:
    from evidently.core.report import Snapshot as EvidentlyRun

    from config.settings import Settings
    from monitoring.drift import DriftResult
    from monitoring.ood import OODResult
    from predlog.log import VersionLabels, WindowBounds

SCORE_COLUMN = "score"
"""The reference's and the window's P(positive) column (binary classifiers)."""

LIVE_ROLES: dict[str, tuple[str, ...]] = {
    CHAMPION: (CHAMPION,),
    CHALLENGER: (CHALLENGER, SHADOW),
    PREVIOUS: (CHAMPION, CHALLENGER, SHADOW),
}
"""The rows each alias's live metric is measured on: the champion's own answers; the
challenger's canary answers and shadow predictions; the previous version's rows in any
role (before its demotion it answered as champion)."""

LABEL_FIGURES = ("label_coverage", "label_delay_p50_s", "label_delay_p90_s")
"""Per alias (champion_label_coverage, ...): the figures a check adds about its labels."""


# -- what the flow hands in --------------------------------------------------------------


@dataclass
class MonitorWindow:
    """What a check reads from the prediction log: the window's bounds and exact counts,
    a bounded random sample of its requests (drift, OOD) and its labelled rows (live
    metrics). The sample is drawn by the database, so its cost does not grow with the
    window."""

    log_url: str
    bounds: WindowBounds
    sample: pd.DataFrame
    """At most max(`drift_max_rows`, `ood_max_queries`) answered requests of the window."""
    labels: pd.DataFrame
    """model_version, role, timestamp, prediction, label of the labelled rows (any role)."""
    labels_every: int = 1
    """1: every labelled row; k: a 1-in-k sample of the labels (above `live_max_labels`)."""
    label_figures: list[VersionLabels] = field(default_factory=list)
    """Label coverage and delay per version (aggregate SQL over the whole window)."""
    matured_before: float | None = None
    """Live metrics use only predictions logged at or before this (`label_delay_s`)."""

    @property
    def requests(self) -> int:
        return self.bounds.requests

    @property
    def champion_rows(self) -> int:
        """The requests the champion answered: what its drift and OOD are measured on."""
        return self.bounds.rows_by_role.get(CHAMPION, 0)

    def matured_labels(self) -> pd.DataFrame:
        """The labelled rows old enough to count (all of them when no delay is set)."""
        if self.matured_before is None or self.labels.empty:
            return self.labels
        cutoff = pd.Timestamp(self.matured_before, unit="s", tz="UTC")
        return self.labels[self.labels["timestamp"] <= cutoff]

    @property
    def sampled(self) -> bool:
        return len(self.sample) < self.champion_rows


@dataclass(frozen=True)
class Lineup:
    """The versions a check judges (by alias) and when the aliases last moved: plain
    figures the flow reads from the registry."""

    champion: str | None
    challenger: str | None = None
    previous: str | None = None
    challenger_created_at: datetime | None = None
    previous_holdout: float | None = None
    """The previous version's holdout primary metric: its figure without live rows."""
    last_promotion_at: datetime | None = None
    last_retrain_at: datetime | None = None
    last_rollback_at: datetime | None = None
    """The newest rollback (monitor's or by hand): after the last promotion, it ended that
    promotion's watch and the champion is the version it restored."""
    positive_class: str = ""
    """The champion's positive class (binary classifiers), for its logged scores."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Every alias set in the registry → its version (the label summary names them)."""

    def live_rows(self) -> dict[str, tuple[str | None, tuple[str, ...], datetime | None]]:
        """alias → (version, roles, since): the rows each live metric is measured on; the
        champion's since it became champion (its promotion, or the rollback that restored it)."""
        return {
            CHAMPION: (self.champion, LIVE_ROLES[CHAMPION], self.champion_since()),
            CHALLENGER: (self.challenger, LIVE_ROLES[CHALLENGER], None),
            PREVIOUS: (self.previous, LIVE_ROLES[PREVIOUS], None),
        }

    def champion_since(self) -> datetime | None:
        """When the champion took the alias: the newer of the last promotion and rollback."""
        times = [t for t in (self.last_promotion_at, self.last_rollback_at) if t is not None]
        return max(times) if times else None


class OODRate(Protocol):
    def __call__(self, reference: pd.DataFrame, current: pd.DataFrame) -> OODResult: ...


@dataclass(frozen=True)
class Sources:
    """The reads a measurement needs beyond the window, as functions of the flow."""

    reference: Callable[[], pd.DataFrame]
    """The champion's training reference (features, prediction, maybe `SCORE_COLUMN`)."""
    scores: Callable[[pd.DataFrame, str], pd.Series]
    """P(positive) the service logged for the sampled rows (NaN where none was)."""
    ood: OODRate
    """The OOD rate of the window's features against the reference's index."""


@dataclass
class Gathered:
    """What `gather_figures` found: the policy's figures and the results behind them."""

    figures: Figures
    drift: DriftResult | None = None
    drift_run: EvidentlyRun | None = None
    """Evidently's run of the drift report (the flow saves it as HTML and JSON)."""
    ood: OODResult | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


# -- the whole gathering ---------------------------------------------------------------------


def gather_figures(
    settings: Settings,
    now: datetime,
    window: MonitorWindow,
    schema: dict[str, Any],
    lineup: Lineup,
    sources: Sources,
) -> Gathered:
    """Drift, OOD and live performance → the policy's figures (never raises on bad windows:
    what could not be measured is a message and a None figure)."""
    metric = primary_metric(schema["task"])
    found = Gathered(Figures(now=now))
    problem = unmeasurable(window, schema["features"])
    if problem:
        found.messages.append(problem)
    else:
        reference = sources.reference()
        # One after the other: Qdrant Edge's `query_batch` (the OOD kNN, ~0.45 s at 2,500
        # exact queries) holds the GIL, so a second thread only made both wait on each
        # other (drift + OOD 0.97-1.23 s side by side, 0.80-1.01 s in turn; 1M log,
        # bench/README.md, monitoring, "Session 9").
        measure_window_drift(settings, window, schema, lineup, reference, sources, found)
        found.ood, problem = window_ood(window, schema, reference, sources)
        if problem:
            found.messages.append(problem)
    live = live_figures(settings, window, schema["task"], metric, lineup, found.messages)
    found.performance = live.pop("performance")
    found.figures = figures_of(now, window, found, metric, lineup, live)
    found.labels = label_summary(window.label_figures, lineup.aliases)
    return found


def unmeasurable(window: MonitorWindow, features: Sequence[str]) -> str | None:
    """Why the window's drift and OOD cannot be measured, or None."""
    if window.requests == 0:
        return "the window is empty: no traffic logged yet"
    if len(window.sample) == 0:
        return (
            f"none of the window's {window.requests:,} requests was answered by the champion: "
            "drift and OOD not measured"
        )
    missing = [c for c in features if c not in window.sample.columns]
    if missing:
        return f"logged traffic lacks features {missing}: drift not measured"
    return None


def figures_of(
    now: datetime,
    window: MonitorWindow,
    found: Gathered,
    metric: PrimaryMetric,
    lineup: Lineup,
    live: dict[str, Any],
) -> Figures:
    """The policy's figures from the drift, OOD and live results of one window."""
    drift, ood = found.drift, found.ood
    predicted = drift.prediction_drift if drift else None
    return Figures(
        now=now,
        window_rows=window.requests,
        feature_count=drift.feature_count if drift else None,
        drift_share=drift.drift_share if drift else None,
        drifted_features=tuple(drift.drifted_features) if drift else (),
        dataset_drift=drift.dataset_drift if drift else None,
        prediction_drift=predicted.drifted if predicted else None,
        prediction_drift_score=predicted.score if predicted else None,
        ood_rate=ood.rate if ood else None,
        metric_name=metric.name,
        higher_is_better=metric.higher_is_better,
        champion_version=lineup.champion,
        challenger_version=lineup.challenger,
        challenger_created_at=lineup.challenger_created_at,
        previous_version=lineup.previous,
        last_promotion_at=lineup.last_promotion_at,
        last_retrain_at=lineup.last_retrain_at,
        last_rollback_at=lineup.last_rollback_at,
        **live,
    )


# -- drift and OOD -------------------------------------------------------------------------


def drift_sides(
    reference: pd.DataFrame,
    sample: pd.DataFrame,
    schema: dict[str, Any],
    scores: Callable[[], pd.Series] | None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], str | None]:
    """(reference, current, categorical columns, score column) as the drift check compares
    them: a classifier's labels are categories (their distribution drifts, not their
    "value"), and its logged P(positive) is compared when `scores` is given."""
    current = sample[schema["features"]].copy()
    categorical = list(schema["categorical"])
    if schema["task"] == "regression":
        current["prediction"] = pd.to_numeric(sample["prediction"], errors="coerce")
        return reference, current, categorical, None
    current["prediction"] = sample["prediction"].astype(str)
    categorical.append("prediction")
    reference = reference.assign(prediction=reference["prediction"].astype(str))
    if scores is None:
        return reference, current, categorical, None
    current[SCORE_COLUMN] = scores()
    return reference, current, categorical, SCORE_COLUMN


def measure_window_drift(
    settings: Settings,
    window: MonitorWindow,
    schema: dict[str, Any],
    lineup: Lineup,
    reference: pd.DataFrame,
    sources: Sources,
    found: Gathered,
) -> None:
    """The window's drift (into `found`), sized by the window's exact champion rows."""
    from monitoring.drift import measure_drift

    scored = (
        schema["task"] != "regression"
        and bool(lineup.positive_class)
        and SCORE_COLUMN in reference.columns
    )
    scores = (lambda: sources.scores(window.sample, lineup.positive_class)) if scored else None
    ref, current, categorical, score_column = drift_sides(reference, window.sample, schema, scores)
    try:
        drift, run = measure_drift(
            ref,
            current,
            features=schema["features"],
            categorical=categorical,
            prediction_column="prediction",
            max_rows=settings.drift_max_rows,
            seed=settings.seed,
            drift_share=settings.drift_share_threshold,
            score_column=score_column,
        )
    except ValueError as exc:
        found.messages.append(f"drift not measured: {exc}")
        return
    sampled = drift.sampled or window.sampled
    found.drift = replace(drift, n_current_rows=window.champion_rows, sampled=sampled)
    found.drift_run = run


def window_ood(
    window: MonitorWindow, schema: dict[str, Any], reference: pd.DataFrame, sources: Sources
) -> tuple[OODResult | None, str | None]:
    """(the window's OOD rate sized by its exact champion rows, None) or (None, why not);
    touches nothing shared."""
    try:
        ood = sources.ood(reference, window.sample[schema["features"]])
    except ValueError as exc:
        return None, f"OOD not measured: {exc}"
    sampled = ood.sampled or window.sampled
    return replace(ood, n_rows=window.champion_rows, sampled=sampled), None


# -- live metrics ------------------------------------------------------------------------------


def live_figures(
    settings: Settings,
    window: MonitorWindow,
    task: str,
    metric: PrimaryMetric,
    lineup: Lineup,
    messages: list[str],
) -> dict[str, Any]:
    """The policy's live figures per alias (metric, labelled rows, gain intervals) and the
    details behind them (`performance`), from the window's matured labelled rows."""
    labels = window.matured_labels()
    messages += label_notes(settings, window, len(labels))
    rows = lineup.live_rows()
    measured = {
        alias: live_metric(labels, version, task, roles, since)
        for alias, (version, roles, since) in rows.items()
    }
    previous_value = measured[PREVIOUS][0]
    if lineup.previous is not None and previous_value is None:
        previous_value = lineup.previous_holdout  # no live figure: its holdout one
    level, seed = settings.live_interval_level, settings.seed
    intervals = gain_intervals(
        labels, task, metric.higher_is_better, level, seed, rows, previous_value
    )
    performance: dict[str, Any] = {"metric": metric.name}
    for alias, (_, n, details) in measured.items():
        performance[alias] = {"version": rows[alias][0], "n": n, **details}
    return {
        "champion_metric": measured[CHAMPION][0],
        "champion_labelled_rows": measured[CHAMPION][1],
        "challenger_metric": measured[CHALLENGER][0],
        "challenger_labelled_rows": measured[CHALLENGER][1],
        "previous_metric": previous_value,
        "labelled_rows": answered_labels(window.labels) * window.labels_every,
        "challenger_gain_interval": intervals[0],
        "champion_gain_interval": intervals[1],
        "interval_level": level,
        "performance": performance,
    }


def answered_labels(labels: pd.DataFrame) -> int:
    """Labelled answered requests, young or matured: what a drift retrain would learn from
    (shadow predictions were never answers)."""
    return int(labels["role"].isin((CHAMPION, CHALLENGER)).sum()) if len(labels) else 0


def label_notes(settings: Settings, window: MonitorWindow, matured: int) -> list[str]:
    """What the live metrics leave out: young predictions, a sample of the labels."""
    notes = []
    if window.matured_before is not None:
        notes.append(
            f"live metrics on matured predictions only (older than label_delay_s "
            f"{settings.label_delay_s:g} s): {matured:,} of {len(window.labels):,} labelled rows"
        )
    if window.labels_every > 1:
        notes.append(
            f"live metrics on a 1-in-{window.labels_every} sample of the window's labels "
            f"({matured:,} labelled rows; `live_max_labels` {settings.live_max_labels:,})"
        )
    return notes


def live_metric(
    labels: pd.DataFrame,
    version: str | None,
    task: str,
    roles: tuple[str, ...],
    since: datetime | None = None,
) -> tuple[float | None, int, dict[str, Any]]:
    """A version's primary live metric on its labelled rows (value, n labelled, details).

    `labels` holds the window's labelled rows (`PredictionLog.labelled`); `since` keeps
    only rows logged at or after it (the champion's rows since its promotion).
    """
    from monitoring.drift import measure_performance

    rows = version_rows(labels, version, roles, since)
    if rows.empty:
        return None, 0, {}
    scores = rows["scores"].tolist() if "scores" in rows.columns else None
    result = measure_performance(
        rows["label"].tolist(), rows["prediction"].tolist(), task, scores=scores
    )
    return result.value, result.n_labelled, dict(result.metrics)


def version_rows(
    labels: pd.DataFrame,
    version: str | None,
    roles: tuple[str, ...],
    since: datetime | None = None,
) -> pd.DataFrame:
    """The labelled rows of one version in `roles` (logged at or after `since`)."""
    if version is None or labels.empty:
        return labels.iloc[0:0]
    keep = (labels["model_version"] == version) & labels["role"].isin(roles)
    if since is not None:
        keep &= labels["timestamp"] >= pd.Timestamp(since)
    return labels[keep & labels["label"].notna()]


def gain_intervals(
    labels: pd.DataFrame,
    task: str,
    higher_is_better: bool,
    level: float,
    seed: int,
    versions: dict[str, tuple[str | None, tuple[str, ...], datetime | None]],
    previous_figure: float | None,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Bootstrap intervals of (challenger vs champion, champion vs previous) live gains.

    `versions` maps champion / challenger / previous to (version, roles, since) as the
    live metrics use them (`Lineup.live_rows`); a previous without live rows is compared
    by its figure (`previous_figure`, e.g. its holdout metric).
    """
    from monitoring.live import LabelledRows, gain_interval

    def rows(alias: str) -> LabelledRows | None:
        version, roles, since = versions[alias]
        found = version_rows(labels, version, roles, since)
        if found.empty:
            return None
        return LabelledRows(found["label"].tolist(), found["prediction"].tolist())

    def interval(
        candidate: LabelledRows | None, baseline: LabelledRows | float | None
    ) -> tuple[float, float] | None:
        if candidate is None or baseline is None:
            return None
        found = gain_interval(candidate, baseline, task, higher_is_better, level, seed=seed)
        return None if found is None else (found.low, found.high)

    champion, challenger, previous = rows(CHAMPION), rows(CHALLENGER), rows(PREVIOUS)
    return (
        interval(challenger, champion),
        interval(champion, previous if previous is not None else previous_figure),
    )


# -- labels and alias history --------------------------------------------------------------


class Move(Protocol):
    """A recorded decision as `decision_times` reads it (`registry.AliasMove`)."""

    action: str
    at: str


def decision_times(moves: Sequence[Move]) -> tuple[datetime | None, datetime | None]:
    """(last promotion, last retrain) from decisions given newest first (as the history
    reads them); a rollback counts as neither."""
    last_promotion = last_retrain = None
    for move in moves:
        at = datetime.fromisoformat(move.at) if move.at else None
        if move.action == "promote" and last_promotion is None:
            last_promotion = at
        elif move.action == "retrain" and last_retrain is None:
            last_retrain = at
    return last_promotion, last_retrain


def last_rollback_time(moves: Sequence[Move]) -> datetime | None:
    """The newest rollback among decisions given newest first, None without one."""
    for move in moves:
        if move.action == "rollback":
            return datetime.fromisoformat(move.at) if move.at else None
    return None


def label_summary(
    figures: Sequence[VersionLabels], aliases: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Label coverage and delay per version in the window, with the aliases it holds
    (`aliases`: alias → version)."""
    held: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        held.setdefault(str(version), []).append(alias)
    return {
        f.model_version: {**f.to_dict(), "aliases": sorted(held.get(f.model_version, []))}
        for f in figures
    }


def label_figure_values(summary: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The summary as flat figures per alias (`champion_label_coverage`, ...): what the
    check records beside the policy's figures, the MLflow run logs as metrics and the
    decision history keeps."""
    out: dict[str, float | None] = {}
    for entry in summary.values():
        for alias in entry.get("aliases", []):
            for name in LABEL_FIGURES:
                key = "coverage" if name == "label_coverage" else name.removeprefix("label_")
                out[f"{alias}_{name}"] = entry.get(key)
    return out
