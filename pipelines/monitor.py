"""The monitor flow: gather figures from the prediction log, decide, act, record.

read     = the latest window of the prediction log and the registry's aliases;
figures  = `monitoring.figures.gather_figures` (pure): drift (Evidently) + OOD rate
           (Qdrant) of the window against the champion's training reference, and live
           metrics per version from feedback;
decision = `monitoring.policy.decide(figures, thresholds)` (pure);
act      = retrain (the `train` deployment, recent labelled rows added), promote or
           roll back through `registry`, each recorded in the promotion history,
           as a Prefect event (`monitoring.events`), on the version tags;
record   = an MLflow monitoring run, the Evidently workspace, a Prefect artifact
           (`monitoring.report` says what they show).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from config.settings import Settings, load_settings
from monitoring import events
from monitoring.figures import (
    Lineup,
    MonitorWindow,
    Sources,
    decision_times,
    gather_figures,
    label_figure_values,
    last_rollback_time,
)
from monitoring.heap import freeze_imports
from monitoring.metrics import primary_metric
from monitoring.policy import (
    RETRAIN_PENDING_PREFIX,
    Action,
    Decision,
    Figures,
    decide,
    thresholds_from,
)
from monitoring.report import (
    CheckResult,
    already_judged,
    check_markdown,
    check_run_name,
    judged_state,
    numeric_figures,
    report_title,
)
from pipelines.reference import (
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
    from monitoring.ood import OODResult

LOCAL = dict(cache_policy=NO_CACHE)
SERVER = dict(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE, timeout_seconds=300)


# -- plain functions ----------------------------------------------------------------------


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


def labelled_window(
    window: MonitorWindow, schema: dict[str, Any], source: str | None = None
) -> pd.DataFrame:
    """Recent answered requests with their feedback label, as training rows; each row
    carries `source` (where it came from), when it was logged and its request id."""
    from data.live import LIVE_COLUMNS, LIVE_LOGGED_AT, LIVE_REQUEST_ID, LIVE_SOURCE
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
    from data.live import LIVE_SOURCE

    empty = pd.DataFrame(columns=[*schema["features"], schema["target"]])
    named = champion.tags.get("recent_rows_added") or ""
    if not named:
        return empty, None
    try:
        rows = pd.read_parquet(live_rows_path(settings, champion, named))
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


def live_rows_path(settings: Settings, champion: VersionInfo, named: str) -> Path:
    """A local copy of the live rows `named` (a file, or the artifact URI the monitor
    logged them under), else of the copy the champion's training run logged."""
    import mlflow

    from pipelines.tracking import RETRAIN_DATA_ARTIFACTS
    from pipelines.train import fetch_live_rows, is_artifact_uri

    path = Path(named)
    if is_artifact_uri(named):  # the rows the monitor logged for that retrain
        with contextlib.suppress(Exception):  # else the training run's copy below
            path = fetch_live_rows(settings, named)
    if path.is_file():
        return path
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=str(champion.run_id),
            artifact_path=f"{RETRAIN_DATA_ARTIFACTS}/{path.name}",
            dst_path=tempfile.mkdtemp(prefix="driftloop-retrain-"),
            tracking_uri=settings.resolved_tracking_uri(),
        )
    )


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
        # the challenger's, judged by its own live metrics). The sample is read on its own
        # connection in a second thread while this one reads the labels: the database
        # works without the GIL, so the two reads overlap on a second core.
        with ThreadPoolExecutor(1, thread_name_prefix="monitor-sample") as pool:
            sampling = pool.submit(
                log.sample,
                bounds,
                max(settings.drift_max_rows, settings.ood_max_queries),
                seed=settings.seed,
                roles=(CHAMPION,),
            )
            labelled = log.labelled(bounds, settings.live_max_labels)
            label_figures = log.label_figures(
                bounds, matured_before, settings.live_max_labels, labelled=labelled
            )
            sample = sampling.result()
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
    """Drift, OOD and live performance → the policy's figures (`gather_figures`); the
    drift report saved beside the check. Never raises on bad windows.

    Drift and OOD run on the window's sample (already bounded by the database); their
    results carry the window's exact size. Live metrics use its labelled rows (an evenly
    spread 1-in-k share of them above `live_max_labels`).
    """
    now = datetime.now(UTC)
    result = CheckResult(settings.model_name, now.isoformat(timespec="seconds"), {}, {})
    champion = state["versions"].get(CHAMPION)
    if champion is None:
        result.messages = [f"no champion for {settings.model_name}: nothing to monitor"]
        return Figures(now=now), result
    schema = schema_of(champion, settings)
    lineup = lineup_of(state, primary_metric(schema["task"]).name)
    found = gather_figures(
        settings, now, window, schema, lineup, measure_sources(settings, window, champion, schema)
    )
    if found.drift_run is not None:
        from monitoring.drift import save_report

        folder = monitor_dir(settings) / "reports" / now.strftime("%Y%m%dT%H%M%S")
        html, report_json = save_report(found.drift_run, folder)
        result.report_html, result.report_json = str(html), str(report_json)
    result.drift = found.drift.to_dict() if found.drift else None
    result.ood = asdict(found.ood) if found.ood else None
    result.labels, result.performance = found.labels, found.performance
    for message in found.messages:
        _logger().warning(message)
    result.messages = found.messages
    return found.figures, result


def lineup_of(state: dict[str, Any], metric_name: str) -> Lineup:
    """The aliases' versions and the newest moves, as the figures need them."""
    versions: dict[str, VersionInfo] = state["versions"]
    champion, challenger, previous = (versions.get(a) for a in (CHAMPION, CHALLENGER, PREVIOUS))
    last_promotion, last_retrain = decision_times(state["history"])
    return Lineup(
        champion=champion.version if champion else None,
        challenger=challenger.version if challenger else None,
        previous=previous.version if previous else None,
        challenger_created_at=challenger.created_at if challenger else None,
        previous_holdout=previous.holdout_metric(metric_name) if previous else None,
        last_promotion_at=last_promotion,
        last_retrain_at=last_retrain,
        last_rollback_at=last_rollback_time(state["history"]),
        positive_class=champion.tags.get("positive_class", "") if champion else "",
        aliases={alias: str(info.version) for alias, info in versions.items()},
    )


def measure_sources(
    settings: Settings, window: MonitorWindow, champion: VersionInfo, schema: dict[str, Any]
) -> Sources:
    """The reads `gather_figures` needs: the champion's reference (state folder or its
    run), the scores the service logged, the OOD index (Qdrant)."""
    from monitoring.ood import ood_rate_frame

    def ood(reference: pd.DataFrame, current: pd.DataFrame) -> OODResult:
        index, ref, embedder = ensure_ood_reference(settings, champion.version, reference, schema)
        try:
            return ood_rate_frame(
                index,
                ref,
                embedder,
                current,
                max_queries=settings.ood_max_queries,
                seed=settings.seed,
            )
        finally:
            index.close()

    return Sources(
        reference=lambda: reference_of(champion, settings, schema),
        scores=lambda sample, positive: window_scores(
            window.log_url, settings.model_name, sample, positive
        ),
        ood=ood,
    )


def emit(settings: Settings, event: str, payload: dict[str, Any]) -> None:
    """One monitor event (`monitoring.events`) on the model's resource: the alerts react."""
    from prefect.events import emit_event

    emit_event(event, resource=events.model_resource(settings.model_name), payload=payload)


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
        emit(settings, events.CHALLENGER_RETIRED, move.to_dict())
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
        emit(settings, events.RETRAIN_PENDING, decision.to_dict())
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
    expected = expected_aliases(state["versions"])
    if decision.action == Action.ROLLBACK:
        move = registry.rollback(
            decision.reason,
            actor="monitor",
            figures=figures,
            expected={a: expected[a] for a in (CHAMPION, PREVIOUS)},
            decision_id=decision_id,
        )
        if not move.replayed:
            emit(settings, events.ROLLBACK, move.to_dict())
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
        emit(settings, events.PROMOTION, move.to_dict())
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
    earlier = registry.history.find(decision_id)
    if earlier is not None:  # a retry after the retrain was requested and recorded
        return f"retraining (requested earlier): {earlier.reason}"
    emit(settings, events.DRIFT_DETECTED, decision.to_dict())
    from data.live import LIVE_SOURCE, accumulate_live_rows

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
        "live_rows": recent,
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


@task(name="record", **SERVER)
def record(settings: Settings, result: CheckResult, check_id: str) -> str | None:
    """MLflow monitoring run + the last-check file for `driftloop status`; the link to the
    run's Evidently report that a browser opens (None without an HTTP tracking server).

    Idempotent under retries: the run is tagged with `check_id`, and a retry that
    finds a finished run with it does not log a second one.
    """
    from pipelines.tracking import configure_mlflow

    experiment_id = configure_mlflow(
        settings.resolved_tracking_uri(),
        f"{settings.model_name}-monitoring",
        settings.artifact_root(),
    )
    run_id = log_check_run(settings, result, check_id, experiment_id)
    add_to_workspace(settings, result, check_id)
    path = last_check_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    prune_local_reports(monitor_dir(settings) / "reports", settings.evidently_retention_runs)
    if not result.report_html:
        return None
    return run_artifact_url(settings.resolved_tracking_uri(), experiment_id, run_id, "evidently")


def log_check_run(
    settings: Settings, result: CheckResult, check_id: str, experiment_id: str
) -> str:
    """The check's MLflow run (figures as metrics, the titled Evidently report, the
    Markdown as its note): the finished run a retry finds by `check_id`, else a new one."""
    import mlflow

    logged = mlflow.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`driftloop.check_id` = '{check_id}' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
        output_format="list",
    )
    if logged:
        return logged[0].info.run_id
    if result.report_html and Path(result.report_html).exists():
        from monitoring.drift import title_report

        title_report(result.report_html, *report_title(result))
    with mlflow.start_run(experiment_id=experiment_id, run_name=check_run_name(result)) as run:
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
        return run.info.run_id


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
    from monitoring.drift import report_run_file
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
        report_run_file(result.report_json) if result.report_json else None,
    )
    if problem:
        _logger().warning(problem)
        result.messages.append(problem)


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
    freeze_imports("check")  # short collector passes during the check (monitoring/heap.py)
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
