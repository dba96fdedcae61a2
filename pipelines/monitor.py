"""The monitor flow: gather figures from the prediction log, decide, act, record.

figures  = drift (Evidently) + OOD rate (Qdrant) of the latest window against the
           champion's training reference, and live metrics per version from feedback;
decision = `monitoring.policy.decide(figures, thresholds)` (pure);
act      = retrain (the `train` deployment, recent labelled rows added), promote or
           roll back through `registry`, each recorded in the promotion history,
           as a Prefect event, on the version tags and in an MLflow monitoring run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from config.settings import Settings, load_settings
from monitoring.policy import (
    RETRAIN_PENDING_PREFIX,
    Action,
    Decision,
    Figures,
    Thresholds,
    decide,
)
from pipelines.evaluate import primary_metric
from pipelines.reference import (
    SCORE_COLUMN,
    ensure_ood_reference,
    monitor_dir,
    reference_of,
    schema_of,
)
from registry import (
    AliasesMoved,
    AliasMove,
    Registry,
    VersionInfo,
    new_decision_id,
)

if TYPE_CHECKING:
    from predlog.log import VersionLabels, WindowBounds

LOCAL = dict(cache_policy=NO_CACHE)
SERVER = dict(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE, timeout_seconds=300)


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


# -- plain functions ----------------------------------------------------------------------


def thresholds_from(settings: Settings) -> Thresholds:
    return Thresholds(
        drift_share_threshold=settings.drift_share_threshold,
        ood_rate_threshold=settings.ood_rate_threshold,
        min_window_rows=settings.min_window_rows,
        min_labelled_rows=settings.min_labelled_rows,
        promotion_margin=settings.live_promotion_margin,
        rollback_margin=settings.rollback_margin,
        watch_period_s=settings.watch_period_s,
        retrain_cooldown_s=settings.retrain_cooldown_s,
        challenger_patience_s=settings.challenger_patience_s,
        min_retrain_labelled_rows=settings.min_retrain_labelled_rows,
        retrain_without_labels=settings.retrain_without_labels,
        fallback_rollback_share=settings.fallback_rollback_share,
        fallback_min_rows=settings.fallback_min_rows,
    )


def last_check_path(settings: Settings) -> Path:
    return monitor_dir(settings) / "last_check.json"


def read_last_check(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads(last_check_path(settings).read_text())
    except (OSError, ValueError):
        return None


def window_scores(log_url: str, model_name: str, sample: pd.DataFrame, positive: str) -> pd.Series:
    """P(`positive`) of each sampled prediction, from the scores the service logged (NaN
    where none were: regressors, versions registered before probabilities were served)."""
    from predlog.log import PredictionLog

    log = PredictionLog(log_url)
    try:
        logged = log.scores(model_name, sample["request_id"].tolist())
    finally:
        log.close()
    lookup = {
        (row.request_id, row.model_version, row.role): row.scores.get(positive)
        for row in logged.itertuples(index=False)
    }
    keys = zip(sample["request_id"], sample["model_version"], sample["role"], strict=True)
    return pd.Series([lookup.get(k) for k in keys], index=sample.index, dtype="float64")


def decision_times(moves: list[AliasMove]) -> tuple[datetime | None, datetime | None]:
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


def expected_aliases(versions: dict[str, VersionInfo]) -> dict[str, str | None]:
    """The aliases a check saw: the expectation its move is compared with."""
    return {
        alias: versions[alias].version if alias in versions else None
        for alias in (CHAMPION, CHALLENGER, PREVIOUS)
    }


def guard_name(model_name: str) -> str:
    """The Prefect global concurrency limit that lets one check per model run at a time."""
    return f"driftloop-monitor-{model_name}"


class MonitorBusy(RuntimeError):
    """Another monitor check of the same model holds the guard."""


@contextmanager
def monitor_guard(settings: Settings) -> Iterator[None]:
    """Hold the model's one-check-at-a-time slot (a Prefect global concurrency limit).

    The scheduled deployment, `driftloop monitor` and any other caller of the flow
    share it through the Prefect server, so two checks of one model never decide
    on the same state. Waits `monitor_guard_wait_s` (0 = refuse at once), then
    raises `MonitorBusy`. A holder that dies frees its slot when its lease ends.
    """
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    name = guard_name(settings.model_name)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    wait = settings.monitor_guard_wait_s
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=wait if wait > 0 else None,
                    max_retries=0 if wait == 0 else None,
                    strict=True,
                    lease_duration=120,
                )
            )
        except Exception as exc:  # 423 Locked at once, or the wait ran out
            waited = "refused at once" if wait == 0 else f"waited {wait:g} s"
            raise MonitorBusy(
                f"another monitor check of {settings.model_name!r} is running "
                f"(Prefect concurrency limit {name!r}); {waited}: try again when it ends, "
                "or raise DRIFTLOOP_MONITOR_GUARD_WAIT_S"
            ) from exc
        yield


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
    live metrics use them; a previous without live rows is compared by its figure
    (`previous_figure`, e.g. its holdout metric).
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


LABEL_FIGURES = ("label_coverage", "label_delay_p50_s", "label_delay_p90_s")
"""Per alias (champion_label_coverage, ...): the figures a check adds about its labels."""


def label_summary(
    figures: list[VersionLabels], versions: dict[str, VersionInfo]
) -> dict[str, dict[str, Any]]:
    """Label coverage and delay per version in the window, with the aliases it holds."""
    aliases: dict[str, list[str]] = {}
    for alias, info in versions.items():
        aliases.setdefault(str(info.version), []).append(alias)
    return {
        f.model_version: {**f.to_dict(), "aliases": sorted(aliases.get(f.model_version, []))}
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
        return self.bounds.rows_by_role.get("champion", 0)

    def matured_labels(self) -> pd.DataFrame:
        """The labelled rows old enough to count (all of them when no delay is set)."""
        if self.matured_before is None or self.labels.empty:
            return self.labels
        cutoff = pd.Timestamp(self.matured_before, unit="s", tz="UTC")
        return self.labels[self.labels["timestamp"] <= cutoff]

    @property
    def sampled(self) -> bool:
        return len(self.sample) < self.champion_rows


def labelled_window(
    window: MonitorWindow, schema: dict[str, Any], source: str | None = None
) -> pd.DataFrame:
    """Recent answered requests with their feedback label, as training rows; each row
    carries `source` (where it came from), when it was logged and its request id."""
    from pipelines.train import LIVE_COLUMNS, LIVE_LOGGED_AT, LIVE_REQUEST_ID, LIVE_SOURCE
    from predlog.log import PredictionLog

    log = PredictionLog(window.log_url)
    try:
        answered = log.labelled_frame(window.bounds)
    finally:
        log.close()
    missing = [c for c in schema["features"] if c not in answered.columns]
    if answered.empty or missing:
        return pd.DataFrame(columns=[*schema["features"], schema["target"], *LIVE_COLUMNS])
    rows = answered[schema["features"]].copy()
    rows[schema["target"]] = answered["label"].to_numpy()
    rows[LIVE_SOURCE] = source or f"live window of {window.bounds.model_name}"
    rows[LIVE_LOGGED_AT] = answered["timestamp"].map(pd.Timestamp.timestamp).to_numpy(float)
    rows[LIVE_REQUEST_ID] = answered["request_id"].astype(str).to_numpy()
    return rows.reset_index(drop=True)


def champion_live_rows(
    settings: Settings, champion: VersionInfo, schema: dict[str, Any]
) -> tuple[pd.DataFrame, str | None]:
    """The live rows the champion was trained on besides its data source (what its own
    drift retrain added), and a note when they cannot be read.

    They are the file its `recent_rows_added` tag names, or (an artifact URI since the
    monitor hands retrains their rows through MLflow; a file gone from another machine
    or a cleaned state folder) the copy its training run logged under `retrain_data/`.
    Rows from files without a source column are named after the file.
    """
    import mlflow

    from pipelines.train import (
        LIVE_SOURCE,
        RETRAIN_DATA_ARTIFACTS,
        fetch_live_rows,
        is_artifact_uri,
    )

    empty = pd.DataFrame(columns=[*schema["features"], schema["target"]])
    named = champion.tags.get("recent_rows_added") or ""
    if not named:
        return empty, None
    path = Path(named)
    try:
        if is_artifact_uri(named):  # the rows the monitor logged for that retrain
            with contextlib.suppress(Exception):  # else the training run's copy below
                path = fetch_live_rows(settings, named)
        if not path.is_file():
            path = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=str(champion.run_id),
                    artifact_path=f"{RETRAIN_DATA_ARTIFACTS}/{path.name}",
                    dst_path=tempfile.mkdtemp(prefix="driftloop-retrain-"),
                    tracking_uri=settings.resolved_tracking_uri(),
                )
            )
        rows = pd.read_parquet(path)
    except Exception as exc:  # gone everywhere: the retrain carries the new window only
        return empty, (
            f"the live rows v{champion.version} was trained on ({named}) cannot be read "
            f"({type(exc).__name__}: {exc}); this retrain carries the new window only"
        )
    needed = [*schema["features"], schema["target"]]
    lacking = [c for c in needed if c not in rows.columns]
    if lacking:
        return empty, (
            f"the live rows v{champion.version} was trained on ({named}) lack {lacking}; "
            "this retrain carries the new window only"
        )
    if LIVE_SOURCE not in rows.columns:
        rows[LIVE_SOURCE] = f"live window {named}"
    return rows, None


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow, a plain one outside (benchmarks, scripts)."""
    try:
        return get_run_logger()
    except Exception:  # no run context
        return logging.getLogger("driftloop.monitor")


# -- tasks ------------------------------------------------------------------------------------


@task(name="read-window", **LOCAL)
def read_window(
    settings: Settings, window_rows: int | None, window_s: float | None = None
) -> MonitorWindow:
    """The model's latest `window_rows` requests (logged within `window_s` seconds when
    given; None = no such bound): exact counts, a sample and the labelled rows."""
    from predlog.log import PredictionLog

    now = time.time()
    since = now - window_s if window_s is not None else None
    matured_before = now - settings.label_delay_s if settings.label_delay_s > 0 else None
    log = PredictionLog(settings.resolved_prediction_log_url())
    try:
        bounds = log.window(settings.model_name, rows=window_rows, since=since)
        # Drift and OOD of the champion: the requests it answered (a canary's answers are
        # the challenger's, judged by its own live metrics).
        sample = log.sample(
            bounds,
            max(settings.drift_max_rows, settings.ood_max_queries),
            seed=settings.seed,
            roles=("champion",),
        )
        labelled = log.labelled(bounds, settings.live_max_labels)
        label_figures = log.label_figures(
            bounds, matured_before, settings.live_max_labels, labelled=labelled
        )
    finally:
        log.close()
    return MonitorWindow(
        log.url,
        bounds,
        sample,
        labelled.rows,
        labelled.every,
        label_figures,
        matured_before,
    )


@task(
    name="read-registry",
    retries=1,
    retry_delay_seconds=3,
    cache_policy=NO_CACHE,
    timeout_seconds=120,
)
def read_registry(settings: Settings) -> dict[str, Any]:
    registry = Registry.from_settings(settings)
    aliases = registry.aliases()
    versions = {alias: registry.get(v) for alias, v in aliases.items()}
    # The newest of each kind, however long the history: cool-down and watch period.
    latest = [registry.history.latest(action) for action in ("promote", "retrain")]
    history = sorted((m for m in latest if m is not None), key=lambda m: m.at, reverse=True)
    return {"versions": versions, "history": history}


def champion_since(champion: VersionInfo) -> float | None:
    """When the champion took the alias (its `champion_since` tag), epoch seconds."""
    value = champion.tags.get("champion_since")
    if not value:
        return None  # versions promoted before the tag existed: no lower bound
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@task(name="read-fallbacks", **LOCAL)
def read_fallbacks(
    settings: Settings, state: dict[str, Any], rows: int | None, seconds: float | None
) -> dict[str, Any]:
    """Figures of the serving fallback: the champion's requests that `previous` answered.

    Counted over the champion's newest `rows` requests (default `monitor_window_rows`)
    since it took the alias (and within `seconds`), so failures of an earlier champion
    never count against this one. {} without a champion or a previous version.
    """
    from predlog.fallbacks import fallback_counts
    from predlog.log import PredictionLog

    versions: dict[str, VersionInfo] = state["versions"]
    champion, previous = versions.get(CHAMPION), versions.get(PREVIOUS)
    if champion is None or previous is None:
        return {}
    bounds = [champion_since(champion)]
    if seconds is not None:
        bounds.append(time.time() - seconds)
    since = max((b for b in bounds if b is not None), default=None)
    log = PredictionLog(settings.resolved_prediction_log_url())
    try:
        counts = fallback_counts(
            log,
            settings.model_name,
            champion.version,
            previous.version,
            since,
            rows or settings.monitor_window_rows,
        )
    finally:
        log.close()
    return {
        "champion_requests": counts.requests,
        "champion_fallback_rows": counts.fallback_rows,
        "fallback_error": counts.error,
    }


@task(name="measure", **LOCAL)
def measure(
    settings: Settings, window: MonitorWindow, state: dict[str, Any]
) -> tuple[Figures, CheckResult]:
    """Drift, OOD and live performance → the policy's figures (never raises on bad windows).

    Drift and OOD run on the window's sample (already bounded by the database); their
    results carry the window's exact size. Live metrics use its labelled rows (an evenly
    spread 1-in-k share of them above `live_max_labels`).
    """
    from monitoring.drift import measure_drift, save_report
    from monitoring.ood import ood_rate_frame

    logger = _logger()
    now = datetime.now(UTC)
    versions: dict[str, VersionInfo] = state["versions"]
    champion = versions.get(CHAMPION)
    challenger = versions.get(CHALLENGER)
    previous = versions.get(PREVIOUS)
    messages: list[str] = []
    result = CheckResult(settings.model_name, now.isoformat(timespec="seconds"), {}, {})
    if champion is None:
        messages.append(f"no champion for {settings.model_name}: nothing to monitor")
        figures = Figures(now=now)
        result.messages = messages
        return figures, result
    schema = schema_of(champion, settings)
    task_kind = schema["task"]
    metric = primary_metric(task_kind)
    answered = window.sample
    drift = ood = None
    if window.requests == 0:
        messages.append("the window is empty: no traffic logged yet")
    elif len(answered) == 0:
        messages.append(
            f"none of the window's {window.requests:,} requests was answered by the champion: "
            "drift and OOD not measured"
        )
    else:
        missing = [c for c in schema["features"] if c not in answered.columns]
        if missing:
            messages.append(f"logged traffic lacks features {missing}: drift not measured")
        else:
            reference = reference_of(champion, settings, schema)
            current = answered[schema["features"]].copy()
            current["prediction"] = (
                pd.to_numeric(answered["prediction"], errors="coerce")
                if task_kind == "regression"
                else answered["prediction"].astype(str)
            )
            categorical = list(schema["categorical"])
            positive = champion.tags.get("positive_class", "")
            score_column = None
            if task_kind != "regression":
                # Labels are categories: their distribution drifts, not their "value".
                categorical.append("prediction")
                reference = reference.assign(prediction=reference["prediction"].astype(str))
                if positive and SCORE_COLUMN in reference.columns:
                    score_column = SCORE_COLUMN
                    current[SCORE_COLUMN] = window_scores(
                        window.log_url, settings.model_name, answered, positive
                    )
            try:
                drift, snapshot = measure_drift(
                    reference,
                    current,
                    features=schema["features"],
                    categorical=categorical,
                    prediction_column="prediction",
                    max_rows=settings.drift_max_rows,
                    seed=settings.seed,
                    drift_share=settings.drift_share_threshold,
                    score_column=score_column,
                )
                drift = replace(
                    drift,
                    n_current_rows=window.champion_rows,
                    sampled=drift.sampled or window.sampled,
                )
                folder = monitor_dir(settings) / "reports" / now.strftime("%Y%m%dT%H%M%S")
                html, report_json = save_report(snapshot, folder)
                result.report_html = str(html)
                result.report_json = str(report_json)
                result.drift = drift.to_dict()
            except ValueError as exc:
                messages.append(f"drift not measured: {exc}")
            try:
                index, ref, embedder = ensure_ood_reference(
                    settings, champion.version, reference, schema
                )
                ood = ood_rate_frame(
                    index,
                    ref,
                    embedder,
                    answered[schema["features"]],
                    max_queries=settings.ood_max_queries,
                    seed=settings.seed,
                )
                index.close()
                ood = replace(
                    ood, n_rows=window.champion_rows, sampled=ood.sampled or window.sampled
                )
                result.ood = asdict(ood)
            except ValueError as exc:
                messages.append(f"OOD not measured: {exc}")
    last_promotion, last_retrain = decision_times(state["history"])
    all_labels = window.labels
    labels = window.matured_labels()
    if window.matured_before is not None:
        messages.append(
            f"live metrics on matured predictions only (older than label_delay_s "
            f"{settings.label_delay_s:g} s): {len(labels):,} of {len(all_labels):,} labelled rows"
        )
    if window.labels_every > 1:
        messages.append(
            f"live metrics on a 1-in-{window.labels_every} sample of the window's labels "
            f"({len(labels):,} labelled rows; `live_max_labels` {settings.live_max_labels:,})"
        )
    champ_value, champ_n, champ_details = live_metric(
        labels, champion.version, task_kind, ("champion",), since=last_promotion
    )
    chall_value, chall_n, chall_details = live_metric(
        labels, challenger.version if challenger else None, task_kind, ("challenger", "shadow")
    )
    prev_value, prev_n, prev_details = live_metric(
        labels,
        previous.version if previous else None,
        task_kind,
        ("champion", "challenger", "shadow"),
    )
    if previous is not None and prev_value is None:
        prev_value = previous.holdout_metric(metric.name)  # no live figure: its holdout one
    challenger_interval, champion_interval = gain_intervals(
        labels,
        task_kind,
        metric.higher_is_better,
        settings.live_interval_level,
        settings.seed,
        {
            CHAMPION: (champion.version, ("champion",), last_promotion),
            CHALLENGER: (
                challenger.version if challenger else None,
                ("challenger", "shadow"),
                None,
            ),
            PREVIOUS: (
                previous.version if previous else None,
                ("champion", "challenger", "shadow"),
                None,
            ),
        },
        prev_value,
    )
    # What a drift retrain would learn from: every labelled request, young or matured.
    answered_labels = (
        int(all_labels["role"].isin(("champion", "challenger")).sum()) if len(all_labels) else 0
    )
    result.labels = label_summary(window.label_figures, versions)
    result.performance = {
        "metric": metric.name,
        "champion": {"version": champion.version, "n": champ_n, **champ_details},
        "challenger": {
            "version": challenger.version if challenger else None,
            "n": chall_n,
            **chall_details,
        },
        "previous": {
            "version": previous.version if previous else None,
            "n": prev_n,
            **prev_details,
        },
    }
    figures = Figures(
        now=now,
        window_rows=window.requests,
        feature_count=drift.feature_count if drift else None,
        drift_share=drift.drift_share if drift else None,
        drifted_features=tuple(drift.drifted_features) if drift else (),
        dataset_drift=drift.dataset_drift if drift else None,
        prediction_drift=drift.prediction_drift.drifted
        if drift and drift.prediction_drift
        else None,
        prediction_drift_score=drift.prediction_drift.score
        if drift and drift.prediction_drift
        else None,
        ood_rate=ood.rate if ood else None,
        metric_name=metric.name,
        higher_is_better=metric.higher_is_better,
        champion_version=champion.version,
        champion_metric=champ_value,
        champion_labelled_rows=champ_n,
        challenger_version=challenger.version if challenger else None,
        challenger_metric=chall_value,
        challenger_labelled_rows=chall_n,
        challenger_created_at=challenger.created_at if challenger else None,
        previous_version=previous.version if previous else None,
        previous_metric=prev_value,
        last_promotion_at=last_promotion,
        last_retrain_at=last_retrain,
        labelled_rows=answered_labels * window.labels_every,
        challenger_gain_interval=challenger_interval,
        champion_gain_interval=champion_interval,
        interval_level=settings.live_interval_level,
    )
    for message in messages:
        logger.warning(message)
    result.messages = messages
    return figures, result


@task(name="act", **SERVER)
def act(
    settings: Settings,
    decision: Decision,
    window: MonitorWindow,
    state: dict[str, Any],
    decision_id: str,
) -> str | None:
    """Carry out the decision; returns what was done (None for no action).

    Idempotent under retries: a move carries `decision_id` and the aliases this
    check saw. A retry after a move that went through finds its decision in the
    ledger and returns the earlier result; if someone else moved the aliases
    meanwhile, nothing moves and the result says so (the next check decides
    anew). A retrain is requested once per `decision_id`.
    """
    registry = Registry.from_settings(settings)
    figures = {k: float(v) for k, v in numeric_figures(decision.figures).items()}
    try:
        if decision.action in (Action.ROLLBACK, Action.PROMOTE):
            return move_aliases(settings, registry, decision, state, figures, decision_id)
        if decision.action == Action.RETIRE_CHALLENGER:
            return retire_challenger(settings, registry, decision, state, decision_id)
    except AliasesMoved as exc:
        get_run_logger().warning("%s", exc)
        return f"not carried out: {exc}"
    if decision.action == Action.RETRAIN:
        return request_retrain(settings, registry, decision, window, state, figures, decision_id)
    if decision.action == Action.RETRAIN_PENDING:
        return retrain_pending(settings, registry, decision, state, figures, decision_id)
    return None


def retire_challenger(
    settings: Settings,
    registry: Registry,
    decision: Decision,
    state: dict[str, Any],
    decision_id: str,
) -> str:
    """Clear the challenger alias (compare-and-swap), tag the version with why."""
    from prefect.events import emit_event

    challenger = state["versions"][CHALLENGER]
    move = registry.clear_alias(
        CHALLENGER,
        decision.reason,
        actor="monitor",
        expected={CHALLENGER: challenger.version},
        decision_id=decision_id,
    )
    registry.set_tags(challenger.version, {"retired": decision.reason[:4900]})
    if move is not None and not move.replayed:
        resource = {"prefect.resource.id": f"driftloop.model.{settings.model_name}"}
        emit_event("driftloop.challenger.retired", resource=resource, payload=move.to_dict())
    return f"retired challenger v{challenger.version}"


def retrain_pending(
    settings: Settings,
    registry: Registry,
    decision: Decision,
    state: dict[str, Any],
    figures: dict[str, float] | None = None,
    decision_id: str = "",
) -> str:
    """Drift without enough labels: say so (champion tag; a history record, an event and
    an alert once per episode, not at every scheduled check); the next checks retrain
    when the labels are in."""
    from prefect.events import emit_event

    champion = state["versions"][CHAMPION]
    already = champion.tags.get("last_monitor_decision", "").startswith(RETRAIN_PENDING_PREFIX)
    # A retry of this decision finds its record: no second record, no second alert.
    if not already and registry.history.find(decision_id) is None:
        registry.history.append(
            AliasMove.now(
                action="retrain-pending",
                moves={},
                reason=decision.reason,
                actor="monitor",
                figures=figures or {},
                decision_id=decision_id,
            )
        )
        resource = {"prefect.resource.id": f"driftloop.model.{settings.model_name}"}
        emit_event("driftloop.retrain.pending", resource=resource, payload=decision.to_dict())
    registry.set_tags(champion.version, {"last_monitor_decision": decision.reason[:4900]})
    return decision.reason


def move_aliases(
    settings: Settings,
    registry: Registry,
    decision: Decision,
    state: dict[str, Any],
    figures: dict[str, float],
    decision_id: str,
) -> str:
    """Roll back or promote as decided: compare-and-swap on the aliases the check saw."""
    from prefect.events import emit_event

    expected = expected_aliases(state["versions"])
    resource = {"prefect.resource.id": f"driftloop.model.{settings.model_name}"}
    if decision.action == Action.ROLLBACK:
        move = registry.rollback(
            decision.reason,
            actor="monitor",
            figures=figures,
            expected={a: expected[a] for a in (CHAMPION, PREVIOUS)},
            decision_id=decision_id,
        )
        if not move.replayed:
            emit_event("driftloop.rollback", resource=resource, payload=move.to_dict())
        return f"rolled back: {move.describe_moves()}"
    challenger = state["versions"][CHALLENGER]
    move = registry.promote(
        challenger.version,
        decision.reason,
        "monitor",
        figures,
        expected={a: expected[a] for a in (CHAMPION, CHALLENGER)},
        decision_id=decision_id,
    )
    if not move.replayed:
        emit_event("driftloop.promotion", resource=resource, payload=move.to_dict())
    return f"promoted: {move.describe_moves()}"


def request_retrain(
    settings: Settings,
    registry: Registry,
    decision: Decision,
    window: pd.DataFrame,
    state: dict[str, Any],
    figures: dict[str, float],
    decision_id: str,
) -> str:
    """Run the train deployment on recent labelled rows, once per decision id."""
    from prefect.events import emit_event

    earlier = registry.history.find(decision_id)
    if earlier is not None:  # a retry after the retrain was requested and recorded
        return f"retraining (requested earlier): {earlier.reason}"
    resource = {"prefect.resource.id": f"driftloop.model.{settings.model_name}"}
    emit_event("driftloop.drift.detected", resource=resource, payload=decision.to_dict())
    from pipelines.train import LIVE_SOURCE, accumulate_live_rows

    champion = state["versions"][CHAMPION]
    schema = schema_of(champion, settings)
    run_id = retrain_rows_run(settings, decision_id)
    uri = f"runs:/{run_id}/{RETRAIN_ROWS_ARTIFACTS}/{decision_id}.parquet"
    here = f"live window {uri}"
    fresh = labelled_window(window, schema, source=here)
    earlier, note = champion_live_rows(settings, champion, schema)
    if note:
        _logger().warning("%s", note)
    recent = accumulate_live_rows(earlier, fresh, settings.retrain_max_rows)
    carried = int((recent[LIVE_SOURCE] != here).sum()) if len(recent) else 0
    log_retrain_rows(settings, run_id, recent, f"{decision_id}.parquet")
    run_name = trigger_retrain(settings, champion, uri, idempotency_key=decision_id)
    added = (
        f"{len(recent)} labelled live rows added ({len(recent) - carried} from this window, "
        f"{carried} carried from v{champion.version}'s training data, at most "
        f"retrain_max_rows {settings.retrain_max_rows:,})"
    )
    registry.history.append(
        AliasMove.now(
            action="retrain",
            moves={},
            reason=f"{decision.reason}; {added}; {run_name}",
            actor="monitor",
            figures=figures,
            decision_id=decision_id,
        )
    )
    registry.set_tags(
        champion.version, {"last_monitor_decision": f"retrain: {decision.reason}"[:4900]}
    )
    return f"retraining: {run_name} with {added}"


RETRAIN_ROWS_ARTIFACTS = "retrain_rows"  # on the retrain's MLflow run: the rows it trains on


def retrain_rows_run(settings: Settings, decision_id: str) -> str:
    """The MLflow run (in `<model>-monitoring`) that carries a retrain's live rows to the
    trainer: found by its decision id on a retry, else created."""
    import mlflow

    from pipelines.tracking import configure_mlflow

    experiment_id = configure_mlflow(
        settings.resolved_tracking_uri(),
        f"{settings.model_name}-monitoring",
        settings.artifact_root(),
    )
    client = mlflow.MlflowClient(tracking_uri=settings.resolved_tracking_uri())
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`driftloop.decision_id` = '{decision_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"retrain rows {decision_id}",
        tags={"driftloop.stage": "retrain-rows", "driftloop.decision_id": decision_id},
    )
    return run.info.run_id


def log_retrain_rows(settings: Settings, run_id: str, rows: pd.DataFrame, name: str) -> None:
    """Upload a retrain's rows as an artifact of `run_id` (the tracking server keeps them:
    the worker that trains needs no disk shared with this one) and finish the run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.resolved_tracking_uri())
    with tempfile.TemporaryDirectory(prefix="driftloop-retrain-") as tmp:
        path = Path(tmp) / name
        rows.to_parquet(path)
        client.log_artifact(run_id, str(path), RETRAIN_ROWS_ARTIFACTS)
    client.log_metric(run_id, "rows", len(rows))
    client.set_terminated(run_id)


def trigger_retrain(
    settings: Settings, champion: VersionInfo, recent: str, idempotency_key: str | None = None
) -> str:
    """Run the `train` deployment (the worker picks it up); in-process when none exists.

    `recent` is the artifact URI of the live rows to add (``runs:/…``): the trainer
    downloads them from the tracking server. The deployment run carries
    `idempotency_key`: a retry gets the same flow run back instead of a second
    training. The in-process fallback has no such key.
    """
    parameters: dict[str, Any] = {
        "model_name": settings.model_name,
        "data": champion.tags.get("data_source_arg") or None,
        "target": champion.tags.get("target") or None,
        "family": champion.tags.get("family") or None,
        "extra_data": recent,
        # Drift is why this retrain runs: the window may hold values beyond the contract's
        # ranges; they are admitted in a new contract revision (hard rules still apply).
        "widen_contract": True,
    }
    for bound in ("time_from", "time_until"):
        if champion.tags.get(bound):
            parameters[bound] = float(champion.tags[bound])
    parameters = {k: v for k, v in parameters.items() if v is not None}
    try:
        from prefect.deployments import run_deployment

        run = run_deployment(
            "train/train", parameters=parameters, timeout=0, idempotency_key=idempotency_key
        )
        return f"flow run {run.name} of deployment train/train"
    except Exception as exc:  # no deployment (no `driftloop up`): train right here
        get_run_logger().info("no train deployment (%s); training in this process", exc)
        from data.errors import DataError
        from pipelines.train import train_flow

        try:
            result = train_flow(**parameters)
        except DataError as failed:  # deterministic: a retry would fail the same way
            first = str(failed).strip().splitlines()[0][:500]
            get_run_logger().warning("in-process retraining failed its data check: %s", failed)
            return f"in-process training failed its data check (nothing registered): {first}"
        return f"in-process training → v{result['version']} ({result['alias']})"


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


@task(name="record", **SERVER)
def record(settings: Settings, result: CheckResult, check_id: str) -> str | None:
    """MLflow monitoring run + the last-check file for `driftloop status`; the link to the
    run's Evidently report that a browser opens (None without an HTTP tracking server).

    Idempotent under retries: the run is tagged with `check_id`, and a retry that
    finds a finished run with it does not log a second one.
    """
    import mlflow

    from pipelines.tracking import configure_mlflow

    experiment_id = configure_mlflow(
        settings.resolved_tracking_uri(),
        f"{settings.model_name}-monitoring",
        settings.artifact_root(),
    )
    logged = mlflow.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`driftloop.check_id` = '{check_id}' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
        output_format="list",
    )
    if result.report_html and Path(result.report_html).exists() and not logged:
        from monitoring.drift import title_report

        title_report(result.report_html, *report_title(result))
    if logged:
        run_id = logged[0].info.run_id
    else:
        with mlflow.start_run(experiment_id=experiment_id, run_name=check_run_name(result)) as run:
            run_id = run.info.run_id
            mlflow.set_tags(
                {
                    "driftloop.check_id": check_id,
                    "driftloop.action": result.decision.get("action", "none"),
                    "driftloop.reason": str(result.decision.get("reason", ""))[:4900],
                    "champion_version": str(result.figures.get("champion_version") or ""),
                    "mlflow.note.content": check_markdown(result, thresholds_from(settings)),
                }
            )
            mlflow.log_metrics(numeric_figures(result.figures))
            mlflow.log_dict(result.to_dict(), "check.json")
            for report in (result.report_html, result.report_json):
                if report:
                    mlflow.log_artifact(report, "evidently")
    add_to_workspace(settings, result, check_id)
    path = last_check_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    prune_local_reports(monitor_dir(settings) / "reports", settings.evidently_retention_runs)
    if not result.report_html:
        return None
    return run_artifact_url(settings.resolved_tracking_uri(), experiment_id, run_id, "evidently")


def report_title(result: CheckResult) -> tuple[str, list[str]]:
    """The HTML report's title and header lines: model, decision, versions, window, OOD."""
    figures = result.figures
    versions = ", ".join(
        f"{role} v{figures[f'{role}_version']}"
        for role in ("champion", "challenger", "previous")
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


def prune_local_reports(folder: Path, keep: int | None) -> int:
    """Delete the oldest local report folders beyond `keep` (None: keep all); the copies
    logged to MLflow stay. Folders are named by check time, so name order is age order."""
    import shutil

    if keep is None or not folder.is_dir():
        return 0
    old = sorted(p for p in folder.iterdir() if p.is_dir())[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return len(old)


def add_to_workspace(settings: Settings, result: CheckResult, check_id: str) -> None:
    """The check as a run in the Evidently workspace `evidently ui` shows (drift over
    time); a workspace that cannot be written is a message, never a failed check."""
    from monitoring.drift import snapshot_file
    from monitoring.workspace import add_check

    problem = add_check(
        settings.evidently_workspace(),
        result.to_dict(),
        check_id,
        {
            "drift_share_threshold": settings.drift_share_threshold,
            "ood_rate_threshold": settings.ood_rate_threshold,
        },
        settings.evidently_retention_runs,
        snapshot_file(result.report_json) if result.report_json else None,
    )
    if problem:
        _logger().warning(problem)
        result.messages.append(problem)


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


def run_artifact_url(tracking_uri: str, experiment_id: str, run_id: str, path: str) -> str | None:
    """The MLflow UI page of a run's artifact folder, for links people open (the UI shows
    the HTML report inline); None when the tracking URI is not an HTTP server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"


def publish_check(settings: Settings, result: CheckResult, report_url: str | None) -> None:
    """The check as a Prefect Markdown artifact on the flow run (key per model, so the
    artifact's history is the history of checks)."""
    create_markdown_artifact(
        key=f"monitor-{settings.model_name}".lower().replace("_", "-").replace(".", "-"),
        markdown=check_markdown(result, thresholds_from(settings), report_url),
        description=f"{settings.model_name}: {check_run_name(result)}",
    )


def check_markdown(
    result: CheckResult, thresholds: Thresholds | None = None, report_url: str | None = None
) -> str:
    """The check for people: the decision and why, rounded figures with the versions they
    belong to and the thresholds they were held against, labels per version, the report."""
    figures = result.figures
    t = thresholds or Thresholds()
    action = result.decision.get("action", "none")
    lines = [
        f"# {result.model_name}: **{action}** (check at {result.at})",
        "",
        str(result.decision.get("reason", "")),
        "",
        "| figure | value | threshold |",
        "|---|---|---|",
    ]
    rows = figures.get("window_rows")
    lines.append(
        f"| requests in the window | {_count(rows)} | at least {t.min_window_rows:,} to judge |"
    )
    lines.append(
        f"| drift share (features drifted) | {_share(figures.get('drift_share'))} "
        f"| drift at ≥ {t.drift_share_threshold:.0%} |"
    )
    lines.append(
        f"| OOD rate | {_share(figures.get('ood_rate'))} | OOD at ≥ {t.ood_rate_threshold:.0%} |"
    )
    metric = figures.get("metric_name") or "live metric"
    for role, rule in (
        ("champion", ""),
        ("challenger", f"promoted when better by ≥ {t.promotion_margin:.0%}"),
        ("previous", f"rollback when the champion is worse by ≥ {t.rollback_margin:.0%}"),
    ):
        version = figures.get(f"{role}_version")
        if not version:
            continue
        value = figures.get(f"{role}_metric")
        labelled = figures.get(f"{role}_labelled_rows")
        shown = "-" if value is None else f"{value:.4g}"
        if labelled is not None:
            shown += f" on {_count(labelled)} labelled rows"
        lines.append(f"| {role} v{version} {metric} (live) | {shown} | {rule} |")
    fallback = figures.get("champion_fallback_rows")
    if fallback:
        lines.append(
            f"| champion answers given by the fallback | {_count(fallback)} of "
            f"{_count(figures.get('champion_requests'))} "
            f"| rollback at ≥ {t.fallback_rollback_share:.0%} |"
        )
    shares = (result.drift or {}).get("prediction_shares") or {}
    for name, share in shares.get("current", {}).items():
        before = shares.get("reference", {}).get(name, 0.0)
        lines.append(f"| share predicted {name} | {before:.1%} → {share:.1%} | |")
    if result.labels:
        lines += [
            "",
            "| version | aliases | rows | matured | labelled | coverage | label delay p50 / p90 |",
            "|---|---|---|---|---|---|---|",
        ]
        for version, entry in result.labels.items():
            lines.append(
                f"| v{version} | {', '.join(entry.get('aliases', [])) or '-'} "
                f"| {_count(entry['rows'])} | {_count(entry['matured_rows'])} "
                f"| {_count(entry['labelled_rows'])} | {_share(entry.get('coverage'))} "
                f"| {_seconds(entry.get('delay_p50_s'))} / {_seconds(entry.get('delay_p90_s'))} |"
            )
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


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} s"


# -- the flow --------------------------------------------------------------------------------


@flow(name="monitor", log_prints=True)
def monitor_flow(
    model_name: str | None = None,
    window_rows: int | None = None,
    act_on_decision: bool = True,
    window_s: float | None = None,
) -> dict[str, Any]:
    """One check: measure the latest window, decide, and (unless told not to) act.

    The window is the latest `window_rows` requests (default `monitor_window_rows`) logged
    within the last `window_s` seconds (default `monitor_window_s`; none = no time bound);
    a `window_s` given without `window_rows` is a time window alone.

    One check per model runs at a time (`monitor_guard`): a second one waits for
    the first, then reads the registry the first one left, so both never act on
    the same state.
    """
    settings = load_settings(model_name=model_name)
    rows, seconds = window_of(settings, window_rows, window_s)
    logger = get_run_logger()
    late = late_scheduled_run(settings)
    if late is not None:
        logger.warning("skipped: %s", late)
        return skipped_check(settings, late)
    try:
        with monitor_guard(settings):
            return check(settings, rows, act_on_decision, seconds)
    except MonitorBusy as exc:
        logger.error(str(exc))
        return failed_check(settings, str(exc))


def failed_check(settings: Settings, message: str) -> dict[str, Any]:
    """The result of a check that could not run, for the CLI and the flow run."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return CheckResult(
        settings.model_name,
        now,
        {"action": "none", "reason": message},
        {},
        messages=[message],
        error=message,
    ).to_dict()


def check(
    settings: Settings, rows: int | None, act_on_decision: bool, seconds: float | None = None
) -> dict[str, Any]:
    """The check itself (inside the guard): read, measure, decide, act, record."""
    logger = get_run_logger()
    check_id = new_decision_id("monitor")  # created once: task retries reuse it
    try:
        state = read_registry(settings)
    except Exception as exc:  # registry unreachable: report, never crash the schedule
        message = f"registry unreachable at {settings.resolved_tracking_uri()}: {exc}"
        logger.error(message)
        return failed_check(settings, message)
    window = read_window(settings, rows, seconds)
    judged = judged_state(window, state)
    already = already_judged(read_last_check(settings), judged)
    if already is not None:
        logger.info(already)
        return skipped_check(settings, already)
    figures, result = measure(settings, window, state)
    result.judged = judged
    figures = replace(figures, **read_fallbacks(settings, state, rows, seconds))
    decision = conclude(settings, figures, result)
    logger.info("%s: %s", decision.action, decision.reason)
    if act_on_decision and decision.action != Action.NONE:
        result.acted = act(settings, decision, window, state, check_id)
    report_url = record(settings, result, check_id)
    publish_check(settings, result, report_url)
    if settings.log_retention_s is not None:
        prune_log(settings, settings.log_retention_s)
    return result.to_dict()


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


def skipped_check(settings: Settings, reason: str) -> dict[str, Any]:
    """A check that did nothing on purpose (nothing new, or a late scheduled run)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    result = CheckResult(settings.model_name, now, {"action": "none", "reason": reason}, {})
    result.messages.append(f"skipped: {reason}")
    return result.to_dict()


def late_scheduled_run(settings: Settings) -> str | None:
    """Why this flow run is skipped: a scheduled run that starts more than one monitor
    interval after its time (the stack or worker was down) is superseded by the next
    scheduled one, so catch-up runs after downtime do not judge old traffic in a burst.
    None for runs started by hand, in process, or on time."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = getattr(context, "flow_run", None)
    if run is None or not getattr(run, "auto_scheduled", False):
        return None
    expected = run.expected_start_time
    if expected is None:
        return None
    late_s = (datetime.now(UTC) - expected).total_seconds()
    if late_s <= settings.monitor_interval_s:
        return None
    return (
        f"late scheduled run: due at {expected.isoformat(timespec='seconds')}, "
        f"{late_s:,.0f} s late (more than the {settings.monitor_interval_s:,.0f} s monitor "
        "interval: the stack or the worker was down); the next scheduled check judges the "
        "traffic"
    )


def conclude(settings: Settings, figures: Figures, result: CheckResult) -> Decision:
    """The policy's decision on the figures; the check's label coverage and delay figures
    go beside the policy's, in the result and in the decision (and so in the history)."""
    decision = decide(figures, thresholds_from(settings))
    labels = label_figure_values(result.labels)
    decision = replace(decision, figures={**decision.figures, **labels})
    result.decision = decision.to_dict()
    result.figures = {**figures.to_dict(), **labels}
    return decision


def window_of(
    settings: Settings, window_rows: int | None, window_s: float | None
) -> tuple[int | None, float | None]:
    """(rows, seconds) bounds of a check's window from the arguments and the settings."""
    if window_s is not None:
        return window_rows, window_s  # a time window asked for: rows only if also asked
    return window_rows or settings.monitor_window_rows, settings.monitor_window_s


@task(name="prune-log", **LOCAL)
def prune_log(settings: Settings, older_than_s: float) -> tuple[int, int]:
    """Retention: delete the model's log rows older than `older_than_s` (batched)."""
    from predlog.log import PredictionLog

    log = PredictionLog(settings.resolved_prediction_log_url())
    try:
        deleted = log.prune(time.time() - older_than_s, model_name=settings.model_name)
    finally:
        log.close()
    if any(deleted):
        _logger().info("retention: deleted %d predictions and %d labels", *deleted)
    return deleted
