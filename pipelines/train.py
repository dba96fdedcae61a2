"""The training flow: load → validate → split → fit → evaluate → log → register →
package → gate.

The flow only wires tasks; each task is a thin wrapper around plain functions
(`data`, `pipelines.families`, `pipelines.evaluate`, `pipelines.gate`,
`registry`) that are tested without Prefect. Tasks that talk to servers carry
retries with backoff and timeouts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from config.names import CHALLENGER, CHAMPION
from config.settings import REPO_ROOT, Settings, load_settings
from data.contract import (
    LABEL_RULE_KEY,
    Contract,
    ContractDiff,
    ContractViolation,
    ValidationReport,
    build_contract,
    diff,
    label_rule,
    validate,
    widen,
)
from data.sources import Snapshot, load_dataset
from data.split import time_split, train_validation_split
from monitoring.metrics import primary_metric
from pipelines.evaluate import (
    classifier_decision,
    evaluation_plots,
    explain_task,
    holdout_metrics,
    score_pyfunc,
)
from pipelines.families import require_family
from pipelines.gate import GateDecision, gate
from pipelines.tracking import configure_mlflow
from registry import AliasesMoved, Registry, new_decision_id
from registry.decision import DECISION_KEY, Decision, check_positive_class

REGISTRATION_KEY_TAG = "driftloop.registration_key"
MODEL_URI_TAG = "driftloop.model_uri"

# The live rows a drift retrain adds carry where each came from, when it was logged and
# its request id; training drops these columns (they are not features).
LIVE_SOURCE = "_driftloop_source"
LIVE_ORIGIN_PREFIX = "live window"  # how the origin of every row from a live window begins
MIN_LIVE_GATE_ROWS = 30  # fewest live-window holdout rows the gate compares on (else all)
LIVE_LOGGED_AT = "_driftloop_logged_at"
LIVE_REQUEST_ID = "_driftloop_request_id"
LIVE_COLUMNS = (LIVE_SOURCE, LIVE_LOGGED_AT, LIVE_REQUEST_ID)
RETRAIN_DATA_ARTIFACTS = "retrain_data"
CONTRACT_ARTIFACT = "contract.json"  # on training and contract runs: the rules in force
"""The training run's folder of the live rows it added (the next retrain builds on them)."""

# Tasks take frames and fitted models: never hash them into cache keys.
LOCAL = dict(cache_policy=NO_CACHE)
SERVER_RETRIES = dict(
    retries=3, retry_delay_seconds=[2, 5, 15], retry_jitter_factor=0.2, cache_policy=NO_CACHE
)


@dataclass
class TrainResult:
    """What one training run produced; the flow's return value and the CLI's output."""

    model_name: str
    version: str
    alias: str
    reason: str
    family: str
    task: str
    metric: str
    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    run_id: str
    data_digest: str
    bento_tag: str | None
    rows: dict[str, int] = field(default_factory=dict)
    task_explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- plain functions (tested without Prefect) -------------------------------------------


def contract_path(settings: Settings) -> Path:
    """The model's contract: a local one in the state folder (built or rebuilt from data)
    wins over one committed in `data/contracts/`; a new one goes to the state folder."""
    local = settings.state_path / "contracts" / f"{settings.model_name}.json"
    committed = REPO_ROOT / "data" / "contracts" / f"{settings.model_name}.json"
    if not local.exists() and committed.exists():
        return committed
    return local


def shares_tracking_server(settings: Settings) -> bool:
    """Whether the tracking store lives outside this state folder (a server, or a store
    named by URI): then another machine may have trained, and what it logged is there."""
    return settings.resolved_tracking_uri() != f"sqlite:///{settings.state_path / 'mlflow.db'}"


def contract_from_tracking(settings: Settings) -> Contract | None:
    """The newest contract logged for the model (by its training or contract-widening
    runs), or None: a machine with an empty state folder continues from the revision
    another machine's retrain left, instead of the committed or a rebuilt one."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.resolved_tracking_uri())
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        if run.data.tags.get("driftloop.stage") not in ("training", "contract"):
            continue
        with tempfile.TemporaryDirectory(prefix="driftloop-contract-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id,
                    artifact_path=CONTRACT_ARTIFACT,
                    dst_path=tmp,
                    tracking_uri=settings.resolved_tracking_uri(),
                )
            except Exception:  # runs logged before contracts travelled with them
                continue
            return Contract.load(Path(local))
    return None


def load_or_build_contract(
    settings: Settings, snapshot: Snapshot, rebuild: bool = False
) -> tuple[Contract, bool]:
    """The model's data contract; built from this snapshot the first time or on `rebuild`.

    Without a local copy, the newest contract logged to the tracking server comes first
    (saved to the state folder), then the committed one.
    """
    local = settings.state_path / "contracts" / f"{settings.model_name}.json"
    if not rebuild and not local.exists() and shares_tracking_server(settings):
        logged = contract_from_tracking(settings)
        if logged is not None:
            logged.save(local)
            return logged, False
    path = contract_path(settings)
    if rebuild:
        path = settings.state_path / "contracts" / f"{settings.model_name}.json"
    elif path.exists():
        return Contract.load(path), False
    contract = build_contract(
        snapshot.frame,
        target=snapshot.target,
        time_column=snapshot.time_column,
        range_tolerance=settings.range_tolerance,
        digest=snapshot.digest,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    contract.save(path)
    return contract, True


def select_rows(
    frame: pd.DataFrame,
    time_column: str | None,
    time_from: float | None,
    time_until: float | None,
) -> pd.DataFrame:
    """Rows with time_from ≤ time < time_until (bounds optional; needs a time column)."""
    if time_from is None and time_until is None:
        return frame
    if time_column is None:
        raise ValueError("--time-from/--time-until need a time column (--time-column)")
    keep = pd.Series(True, index=frame.index)
    if time_from is not None:
        keep &= frame[time_column] >= time_from
    if time_until is not None:
        keep &= frame[time_column] < time_until
    return frame.loc[keep].reset_index(drop=True)


def log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    """Log a DataFrame as a Parquet artifact of the active run."""
    import tempfile

    import mlflow

    folder, name = artifact_path.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path)
        mlflow.log_artifact(str(path), folder)


def numeric_as_float(frame: pd.DataFrame, numeric: tuple[str, ...]) -> pd.DataFrame:
    """The frame with numeric feature columns as float64 (how the service sends them)."""
    return frame.astype({column: "float64" for column in numeric if column in frame.columns})


def version_tags(
    snapshot: Snapshot,
    report: ValidationReport,
    family: str,
    metrics: dict[str, float],
    parent_version: str | None,
) -> dict[str, str]:
    """The tags DESIGN.md promises on every version."""
    tags = {
        "data_digest": snapshot.digest,
        "data_source": snapshot.source,
        "validation": "passed" if report.success else "failed",
        "validation_checks": str(report.evaluated),
        "family": family,
        "task": snapshot.task,
        "target": snapshot.target,
        "parent_version": parent_version or "",
    }
    tags.update({f"holdout_{name}": f"{value:.6g}" for name, value in metrics.items()})
    return tags


# -- tasks --------------------------------------------------------------------------------


@task(name="load-data", **LOCAL)
def load_data(settings: Settings, time_from: float | None, time_until: float | None) -> Snapshot:
    snapshot = load_dataset(settings.dataset_spec(), settings.task)
    if time_from is not None or time_until is not None:
        frame = select_rows(snapshot.frame, snapshot.time_column, time_from, time_until)
        snapshot = load_snapshot_from_frame(snapshot, frame)
    get_run_logger().info(
        "loaded %s rows × %s features from %s (digest %s, task %s)",
        len(snapshot.frame),
        len(snapshot.features),
        snapshot.source,
        snapshot.digest,
        snapshot.task,
    )
    return snapshot


def load_snapshot_from_frame(snapshot: Snapshot, frame: pd.DataFrame) -> Snapshot:
    """The same snapshot restricted to `frame` (digest recomputed, provenance dropped)."""
    from data.sources import dataset_digest

    return replace(snapshot, frame=frame, digest=dataset_digest(frame), provenance=None)


@dataclass
class ContractCheck:
    """The data contract's verdict on a snapshot, and the revision that gave it."""

    report: ValidationReport
    contract: Contract
    path: Path
    built: bool = False
    widened: ContractDiff | None = None  # set when soft rules were widened to admit drift
    first: ValidationReport | None = None  # the verdict before widening


def check_contract(
    settings: Settings, snapshot: Snapshot, rebuild: bool = False, allow_widen: bool = False
) -> ContractCheck:
    """Validate `snapshot`; with `allow_widen`, admit range/category drift in a new revision.

    Only soft failures (ranges, feature categories) are widened; any hard failure
    (missing column, wrong kind, empties, unknown target class) leaves the verdict as
    it is. The widened contract replaces the local one; the old revision is kept
    beside it as `<model>.r<N>.json`.
    """
    contract, built = load_or_build_contract(settings, snapshot, rebuild)
    path = contract_path(settings)
    kwargs = {"source": snapshot.source, "provenance": snapshot.provenance}
    report = validate(snapshot.frame, contract, **kwargs)
    if report.success or not allow_widen or report.hard_failures:
        return ContractCheck(report, contract, path, built)
    reason = f"admit {snapshot.source}"
    widened = widen(contract, snapshot.frame, reason=reason)
    second = validate(snapshot.frame, widened, **kwargs)
    if not second.success:
        return ContractCheck(report, contract, path, built)
    local = settings.state_path / "contracts" / f"{settings.model_name}.json"
    contract.save(local.with_name(f"{settings.model_name}.r{contract.revision}.json"))
    widened.save(local)
    return ContractCheck(second, widened, local, built, diff(contract, widened), report)


@task(name="validate-data", **LOCAL)
def validate_data(
    settings: Settings,
    snapshot: Snapshot,
    experiment_id: str,
    rebuild_contract: bool = False,
    widen_contract: bool = False,
) -> ContractCheck:
    """Run the data contract; on failure log a FAILED run with the report, then stop.

    A widened contract (drift-triggered retrains) is logged as its own MLflow run with
    the new revision and the diff, so the registry shows why the rules moved.
    """
    import mlflow

    logger = get_run_logger()
    check = check_contract(settings, snapshot, rebuild_contract, widen_contract)
    report = check.report
    if check.built:
        logger.info("built a new data contract at %s", check.path)
    if check.widened is not None:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"contract r{check.contract.revision} widened",
        ):
            mlflow.set_tags(
                {
                    "driftloop.stage": "contract",
                    "data_digest": snapshot.digest,
                    "contract_revision": str(check.contract.revision),
                }
            )
            mlflow.log_dict(check.contract.to_dict(), "contract.json")
            mlflow.log_dict(check.widened.to_dict(), "contract_diff.json")
            if check.first is not None:
                mlflow.log_dict(check.first.to_dict(), "validation_before_widening.json")
        logger.info("data contract widened to admit drift: %s", check.widened.summary())
    if not report.success:
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"rejected data {snapshot.digest[:8]}"
        ):
            mlflow.set_tags({"driftloop.stage": "validation", "data_digest": snapshot.digest})
            mlflow.log_dict(report.to_dict(), "validation.json")
            mlflow.end_run(status="FAILED")
        violation = ContractViolation(report)
        violation.args = (
            f"{snapshot.source} breaks the data contract {check.path}; "
            f"nothing was registered.\n{report.summary()}",
        )
        raise violation
    logger.info("data contract passed: %s checks", report.evaluated)
    return check


@task(name="fit", **LOCAL)
def fit(settings: Settings, snapshot: Snapshot, train: pd.DataFrame) -> Any:
    from pipelines.families import FitConfig, fit_model

    config = FitConfig(
        task=snapshot.task,
        categorical=snapshot.categorical,
        numeric=snapshot.numeric,
        seed=settings.seed,
        max_epochs=settings.torch_max_epochs,
        patience=settings.torch_patience,
    )
    features = list(snapshot.features)
    valid_x = valid_y = None
    fit_rows = train
    if settings.family == "torch":
        fit_rows, valid = train_validation_split(
            train, snapshot.time_column, settings.validation_fraction, seed=settings.seed
        )
        valid_x, valid_y = valid[features], valid[snapshot.target]
    started = time.perf_counter()
    fitted = fit_model(
        settings.family,
        config,
        fit_rows[features],
        fit_rows[snapshot.target],
        valid_x,
        valid_y,
    )
    get_run_logger().info(
        "fitted %s on %s rows in %.1f s",
        settings.family,
        len(fit_rows),
        time.perf_counter() - started,
    )
    return fitted


@task(name="log-and-register", **SERVER_RETRIES, timeout_seconds=600)
def log_and_register(
    settings: Settings,
    experiment_id: str,
    snapshot: Snapshot,
    report: ValidationReport,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    fitted: Any,
    metrics: dict[str, float],
    parent_version: str | None,
    extra_tags: dict[str, str],
    registration_key: str,
    decision: Decision | None = None,
) -> tuple[str, str]:
    """One MLflow run with everything a reviewer needs, then a new registry version.

    Idempotent under retries: the flow creates `registration_key` once, fresh, for
    this call; the run and the version carry it. A retry returns the version already
    registered under it, or registers the model a finished earlier attempt logged,
    instead of logging and registering a duplicate. The first attempt skips those
    look-ups: nothing can carry a key made for it.

    Round trips are few: the run is created with its tags, params and metrics go in
    one `log_batch`, both datasets in one `log_inputs`.
    """
    import mlflow
    from mlflow.models import infer_signature
    from prefect.runtime import task_run

    registry = Registry.from_settings(settings)
    tags = version_tags(snapshot, report, settings.family, metrics, parent_version)
    tags.update(extra_tags)
    if decision is not None:
        tags.update(decision.tags())
    # run_count is 1 on a task's first attempt (0 outside a task run: look up then).
    first_attempt = task_run.run_count == 1
    if not first_attempt:
        earlier = earlier_registration(registry, experiment_id, registration_key, tags)
        if earlier is not None:
            get_run_logger().info("retry: v%s was already registered from run %s", *earlier)
            return earlier
    features = list(snapshot.features)
    x_holdout = holdout[features]
    predictions = fitted.predict(x_holdout)
    labels = predictions
    if decision is not None:  # plots show the labels serving gives (the recorded rule)
        labels = decision.labels(fitted.predict_proba(x_holdout))
    importance = fitted.feature_importance(x_holdout, holdout[snapshot.target])
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{settings.family} {snapshot.digest[:8]}",
        tags={
            "driftloop.stage": "training",
            "driftloop.model_name": settings.model_name,
            REGISTRATION_KEY_TAG: registration_key,
            "family": settings.family,
            "task": snapshot.task,
            "data_digest": snapshot.digest,
        },
    ) as run:
        log_params_and_metrics(
            run.info.run_id,
            {
                "family": settings.family,
                "task": snapshot.task,
                "target": snapshot.target,
                "time_column": snapshot.time_column or "",
                "n_features": len(features),
                "rows_train": len(train),
                "rows_holdout": len(holdout),
                "holdout_fraction": settings.holdout_fraction,
                "seed": settings.seed,
                **{f"model.{k}": v for k, v in fitted.params.items()},
            },
            {f"holdout_{k}": v for k, v in metrics.items()},
            fitted.history(),
        )
        mlflow.log_inputs(
            datasets=[
                mlflow.data.from_pandas(
                    frame, source=snapshot.source, targets=snapshot.target, name=name
                )
                for name, frame in (("train", train), ("holdout", holdout))
            ],
            contexts=["training", "holdout"],
            tags_list=[None, None],
        )
        mlflow.log_dict(report.to_dict(), "validation.json")
        mlflow.log_dict(
            {
                "features": features,
                "categorical": list(snapshot.categorical),
                "numeric": list(snapshot.numeric),
                "target": snapshot.target,
                "time_column": snapshot.time_column,
                "task": snapshot.task,
            },
            "schema.json",
        )
        if importance is not None:
            mlflow.log_dict(
                {str(k): float(v) for k, v in importance.items()}, "feature_importance.json"
            )
        for name, figure in evaluation_plots(
            snapshot.task, holdout[snapshot.target], labels, importance
        ).items():
            mlflow.log_figure(figure, f"plots/{name}")
        added = extra_tags.get("recent_rows_added")
        if added:  # what the next drift retrain builds on
            mlflow.log_artifact(str(fetch_live_rows(settings, added)), RETRAIN_DATA_ARTIFACTS)
        # The reference sample the monitor compares live traffic with.
        reference = train.sample(min(len(train), 5000), random_state=settings.seed)
        log_frame(reference, "reference/train_sample.parquet")
        # Numeric features are declared double: a served request may carry a NaN or a
        # float where training saw integers, and MLflow refuses float→long.
        served = numeric_as_float(x_holdout, snapshot.numeric)
        signature = infer_signature(served.head(200), predictions[:200])
        # Serving checks feedback labels against the target's contract rule (bentos.schema).
        contract, _ = load_or_build_contract(settings, snapshot)
        mlflow.log_dict(contract.to_dict(), CONTRACT_ARTIFACT)  # for machines without it
        rule = label_rule(contract, snapshot.task, train[snapshot.target])
        info = fitted.log_model(
            "model",
            input_example=served.head(5),
            signature=signature,
            metadata={
                LABEL_RULE_KEY: rule,
                **({DECISION_KEY: decision.to_dict()} if decision is not None else {}),
            },
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        run_id = run.info.run_id
    version = registry.register(
        info.model_uri,
        run_id,
        tags,
        registration_key=registration_key,
        fresh_key=first_attempt,
    )
    get_run_logger().info("registered %s version %s", settings.model_name, version.version)
    return version.version, run_id


def data_range(snapshot: Snapshot) -> str:
    """The rows a version learned from, in words: ``day 1–90`` or ``dteday 2011-01-01–
    2011-03-31`` along the time column, else ``data <digest>``."""
    column = snapshot.time_column
    if column and column in snapshot.frame.columns and len(snapshot.frame):
        values = snapshot.frame[column].dropna()
        if len(values):
            low, high = values.min(), values.max()
            if isinstance(low, pd.Timestamp):
                return f"{column} {low.date()}–{high.date()}"
            if isinstance(low, float) and low.is_integer() and high.is_integer():
                low, high = int(low), int(high)
            return f"{column} {low}–{high}"
    return f"data {snapshot.digest[:8]}"


def label_training_run(
    settings: Settings,
    run_id: str,
    version: str,
    snapshot: Snapshot,
    holdout_rows: int,
    champion_version: str | None,
    champion_metrics: dict[str, float] | None,
) -> None:
    """What the MLflow UI shows of a training run once its version is known: the name
    ``v<N> <family> <data range>``, and the champion's metrics on this run's own holdout
    (``gate_champion_<metric>``) beside the run's ``holdout_<metric>``, so *Compare* sets
    figures side by side that were measured on the same rows."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    described = data_range(snapshot)
    holdout = f"{holdout_rows:,} holdout rows of {described} (data {snapshot.digest[:8]})"
    note = [
        f"**v{version}** ({settings.family}, {snapshot.task}) trained on {described}.",
        f"`holdout_*` metrics: this version on {holdout}.",
    ]
    tags = [RunTag("mlflow.runName", f"v{version} {settings.family} {described}")]
    metrics = []
    if champion_version and champion_metrics:
        note.append(
            f"`gate_champion_*` metrics: champion v{champion_version} on the same rows "
            "(what the gate compared)."
        )
        tags.append(RunTag("gate_champion_version", str(champion_version)))
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(f"gate_champion_{name}", float(value), stamp, 0)
            for name, value in champion_metrics.items()
        ]
    tags += [RunTag("holdout", holdout), RunTag("mlflow.note.content", "\n\n".join(note))]
    MlflowClient(settings.resolved_tracking_uri()).log_batch(run_id, metrics=metrics, tags=tags)


def log_params_and_metrics(
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    history: dict[str, list[float]] | None = None,
    client: Any = None,
) -> None:
    """Params, metrics and per-epoch `epoch_<name>` metrics of a run in one `log_batch`
    (the client splits it only past the server's per-request limits). `client`: an
    `MlflowClient`, else one for the current tracking URI."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    entries = [Metric(name, float(value), now, 0) for name, value in metrics.items()]
    for name, values in (history or {}).items():
        entries += [Metric(f"epoch_{name}", float(v), now, step) for step, v in enumerate(values)]
    (client or MlflowClient()).log_batch(
        run_id,
        metrics=entries,
        params=[Param(key, str(value)) for key, value in params.items()],
        synchronous=True,
    )


def earlier_registration(
    registry: Registry, experiment_id: str, registration_key: str, tags: dict[str, str]
) -> tuple[str, str] | None:
    """(version, run id) an earlier attempt with this key got to, or None to start afresh.

    A version registered under the key is returned as is; a finished run that
    logged its model but lost the registration answer is registered now (once).
    """
    import mlflow

    found = registry.find_registered(registration_key)
    if found is not None:
        return found.version, str(found.run_id)
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{REGISTRATION_KEY_TAG}` = '{registration_key}' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
        output_format="list",
    )
    if not runs or not runs[0].data.tags.get(MODEL_URI_TAG):
        return None
    run = runs[0]
    version = registry.register(
        run.data.tags[MODEL_URI_TAG], run.info.run_id, tags, registration_key=registration_key
    )
    return version.version, run.info.run_id


def live_holdout_rows(snapshot: Snapshot, holdout: pd.DataFrame) -> np.ndarray | None:
    """Which holdout rows came from live windows (a drift retrain), when there are at least
    `MIN_LIVE_GATE_ROWS` of them; None otherwise.

    The gate compares a drift retrain with the champion on these rows: the traffic the
    new version will serve. On the whole holdout the training file's rows, which the
    champion still handles well, can outweigh the drifted ones, and a retrain that fixes
    the drift loses the gate by a small average gain (seen with 17 % drifted rows: +0.8 %
    against a 2 % margin, while the champion's F1 on the drifted rows was 0.16).
    """
    if snapshot.provenance is None:
        return None
    origin = snapshot.provenance.reindex(holdout.index).astype(str)
    live = origin.str.startswith(LIVE_ORIGIN_PREFIX).to_numpy()
    return live if int(live.sum()) >= MIN_LIVE_GATE_ROWS else None


@task(name="score-champion", **SERVER_RETRIES, timeout_seconds=300)
def score_champion(
    settings: Settings,
    snapshot: Snapshot,
    holdout: pd.DataFrame,
    live: np.ndarray | None = None,
) -> tuple[str | None, dict[str, float] | None, str | None, dict[str, float] | None]:
    """The current champion's metrics on the new holdout: (version, metrics, error, metrics
    on the `live` rows of the holdout (None without them))."""
    import mlflow

    registry = Registry.from_settings(settings)
    champion = registry.by_alias(CHAMPION)
    if champion is None:
        return None, None, None, None
    try:
        model = mlflow.pyfunc.load_model(champion.model_uri)
        recorded = (model.metadata.metadata or {}).get(DECISION_KEY)
        predictions, proba, classes = score_pyfunc(
            model,
            numeric_as_float(holdout[list(snapshot.features)], snapshot.numeric),
            snapshot.task,
            Decision.from_dict(recorded) if recorded else None,
        )
    except Exception as exc:  # a different schema, a missing dependency...
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        get_run_logger().warning("champion v%s cannot score: %s", champion.version, message)
        return champion.version, None, message, None
    metrics = holdout_metrics(snapshot.task, holdout[snapshot.target], predictions, proba, classes)
    live_metrics = None
    if live is not None:
        live_metrics = holdout_metrics(
            snapshot.task,
            holdout[snapshot.target].to_numpy()[live],
            np.asarray(predictions)[live],
            None if proba is None else np.asarray(proba)[live],
            classes,
        )
    return champion.version, metrics, None, live_metrics


@task(name="package", **SERVER_RETRIES, timeout_seconds=600)
def package(settings: Settings, version: str) -> str | None:
    """Build the Bento `<model>-service:v<N>`; the tag is written back on the version."""
    from pipelines.package import package_version_plain

    return package_version_plain(settings, version)


@task(name="index-reference", **LOCAL)
def index_reference(
    settings: Settings, version: str, snapshot: Snapshot, train: pd.DataFrame
) -> None:
    """Index a bounded sample of the version's training rows for the OOD check (Qdrant)."""
    from pipelines.reference import ensure_ood_reference

    schema = {
        "features": list(snapshot.features),
        "numeric": list(snapshot.numeric),
        "categorical": list(snapshot.categorical),
    }
    index, reference, _ = ensure_ood_reference(settings, version, train, schema)
    index.close()
    get_run_logger().info(
        "OOD index %s: %s reference rows, threshold %.3f",
        reference.collection,
        reference.n_points,
        reference.threshold,
    )


@task(name="apply-gate", **SERVER_RETRIES, timeout_seconds=120)
def apply_gate(
    settings: Settings,
    version: str,
    decision: GateDecision,
    figures: dict[str, float],
    champion_version: str | None,
    decision_id: str,
) -> tuple[str, str]:
    """Move the aliases the gate chose; returns (alias, reason) as carried out ("none":
    the version lost the gate and stays without an alias).

    The champion move expects the champion the gate compared with
    (`champion_version`): if another move changed it meanwhile, the comparison is
    stale, so the new version becomes challenger instead and the monitor compares
    them on live traffic. Idempotent under retries through `decision_id`.
    """
    registry = Registry.from_settings(settings)
    registry.set_tags(version, {"gate_decision": f"{decision.alias}: {decision.reason}"})
    alias, reason = decision.alias, decision.reason
    if alias == CHAMPION:
        try:
            if champion_version is None:
                registry.set_alias(
                    CHAMPION,
                    version,
                    reason,
                    "train-flow",
                    figures,
                    expected={CHAMPION: None},
                    decision_id=decision_id,
                )
            else:
                registry.promote(
                    version,
                    reason,
                    "train-flow",
                    figures,
                    expected={CHAMPION: champion_version},
                    decision_id=decision_id,
                )
        except AliasesMoved as exc:
            alias = CHALLENGER
            reason = f"{reason}; but the champion moved during training ({exc}): challenger"
    if alias is None:  # lost the gate: registered, no alias (the tag above says why)
        get_run_logger().info("v%s → no alias: %s", version, reason)
        return "none", reason
    if alias != CHAMPION:
        # The newest candidate replaces any waiting challenger: nothing to compare.
        registry.set_alias(
            CHALLENGER,
            version,
            reason,
            "train-flow",
            figures,
            expected={},
            decision_id=f"{decision_id}.{CHALLENGER}",
        )
    get_run_logger().info("v%s → %s: %s", version, alias, reason)
    return alias, reason


# -- the flow -----------------------------------------------------------------------------


@flow(name="train", log_prints=True)
def train_flow(
    model_name: str | None = None,
    data: str | None = None,
    target: str | None = None,
    task: str | None = None,
    family: str | None = None,
    time_column: str | None = None,
    drop_columns: list[str] | None = None,
    time_from: float | None = None,
    time_until: float | None = None,
    extra_data: str | None = None,
    package_bento: bool = True,
    shuffle_labels: bool = False,
    rebuild_contract: bool = False,
    widen_contract: bool = False,
) -> dict[str, Any]:
    """Train one model version on validated data and register it behind the gate.

    `time_from`/`time_until` restrict training to a time range (e.g. the demo's
    January–March); `extra_data` appends recent labelled traffic (retraining).
    `shuffle_labels` trains on permuted labels: a deliberately bad model for rollback
    drills and the demo; never use it otherwise. `rebuild_contract` rebuilds the data
    contract from this data (when the schema changed on purpose); `widen_contract`
    lets ranges and feature categories grow to admit drifted data (a new contract
    revision, logged with its diff) while hard rules still stop the flow.
    """
    settings = load_settings(
        model_name=model_name,
        data=Path(data) if data else None,
        target=target,
        task=task,
        family=family,
        time_column=time_column,
        drop_columns=drop_columns,
    )
    require_family(settings.family)  # a missing extra fails before anything is logged
    experiment_id = configure_mlflow(
        settings.resolved_tracking_uri(), settings.experiment, settings.artifact_root()
    )
    snapshot = load_data(settings, time_from, time_until)
    if extra_data:
        snapshot = append_recent(snapshot, fetch_live_rows(settings, extra_data), extra_data)
    check = validate_data(settings, snapshot, experiment_id, rebuild_contract, widen_contract)
    report = check.report
    if snapshot.task == "classification" and settings.positive_class:
        check_positive_class(
            snapshot.frame[snapshot.target].dropna().unique(), settings.positive_class
        )
    if shuffle_labels:
        snapshot = shuffled(snapshot, settings.seed)
    train, holdout = time_split(
        snapshot.frame, snapshot.time_column, settings.holdout_fraction, seed=settings.seed
    )
    fitted = fit(settings, snapshot, train)
    features = list(snapshot.features)
    proba = fitted.predict_proba(holdout[features])
    decision, why = None, ""
    predicted = fitted.predict(holdout[features])
    if snapshot.task == "classification" and fitted.classes is not None:
        decision, why = classifier_decision(
            fitted.classes,
            train[snapshot.target],
            settings.positive_class,
            settings.decision_threshold,
        )
        predicted = decision.labels(proba)
    explanation = explain_task(
        snapshot.frame[snapshot.target], snapshot.task, settings.task, decision, why
    )
    get_run_logger().info(explanation)
    metrics = holdout_metrics(
        snapshot.task, holdout[snapshot.target], predicted, proba, fitted.classes
    )
    main_metric = primary_metric(snapshot.task)
    live = live_holdout_rows(snapshot, holdout)
    champion_version, champion_metrics, champion_error, champion_live = score_champion(
        settings, snapshot, holdout, live
    )
    gate_new, gate_champion, compared_on = metrics, champion_metrics, "the same holdout"
    if live is not None:
        gate_new = holdout_metrics(
            snapshot.task,
            holdout[snapshot.target].to_numpy()[live],
            np.asarray(predicted)[live],
            None if proba is None else np.asarray(proba)[live],
            fitted.classes,
        )
        gate_champion = champion_live
        compared_on = (
            f"the {int(live.sum())} live-window rows of the same holdout (the traffic it will "
            f"serve; whole holdout of {len(holdout)} rows: {main_metric.name} "
            f"{metrics[main_metric.name]:.4g}"
            + (
                f" vs {champion_metrics[main_metric.name]:.4g})"
                if champion_metrics and main_metric.name in champion_metrics
                else ")"
            )
        )
    registration_key = new_decision_id("train")  # created once: task retries reuse it
    version, run_id = log_and_register(
        settings,
        experiment_id,
        snapshot,
        report,
        train,
        holdout,
        fitted,
        metrics,
        champion_version,
        {
            "data_source_arg": data or "",
            "time_from": "" if time_from is None else str(time_from),
            "time_until": "" if time_until is None else str(time_until),
            "recent_rows_added": extra_data or "",
            "shuffled_labels": str(shuffle_labels).lower(),
            "contract_revision": str(check.contract.revision),
            "contract_widened": check.widened.summary() if check.widened else "",
        },
        registration_key,
        decision,
    )
    bento_tag = package(settings, version) if package_bento else None
    if package_bento:
        index_reference(settings, version, snapshot, train)
    decision = gate(
        main_metric.name,
        gate_new[main_metric.name],
        gate_champion.get(main_metric.name) if gate_champion else None,
        main_metric.higher_is_better,
        settings.promotion_margin,
        settings.promotion_policy,
        champion_version=champion_version,
        champion_error=champion_error,
        losers_as_challenger=settings.gate_losers_as_challenger,
        compared_on=compared_on,
    )
    figures = {f"new_{k}": v for k, v in metrics.items()}
    if champion_metrics:
        figures.update({f"champion_{k}": v for k, v in champion_metrics.items()})
    if live is not None:
        figures["live_holdout_rows"] = int(live.sum())
        figures.update({f"live_new_{k}": v for k, v in gate_new.items()})
        if gate_champion:
            figures.update({f"live_champion_{k}": v for k, v in gate_champion.items()})
    alias, reason = apply_gate(
        settings, version, decision, figures, champion_version, f"gate-{registration_key}"
    )
    label_training_run(
        settings, run_id, version, snapshot, len(holdout), champion_version, champion_metrics
    )
    result = TrainResult(
        model_name=settings.model_name,
        version=version,
        alias=alias,
        reason=reason,
        family=settings.family,
        task=snapshot.task,
        metric=main_metric.name,
        metrics=metrics,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
        run_id=run_id,
        data_digest=snapshot.digest,
        bento_tag=bento_tag,
        rows={"train": len(train), "holdout": len(holdout)},
        task_explanation=explanation,
    )
    create_markdown_artifact(
        key=f"train-{settings.model_name}".lower().replace("_", "-").replace(".", "-"),
        markdown=result_markdown(result),
        description=f"{settings.model_name} v{version}",
    )
    return result.to_dict()


def accumulate_live_rows(
    earlier: pd.DataFrame, window: pd.DataFrame, max_rows: int
) -> pd.DataFrame:
    """The live rows a drift retrain trains on: the champion's earlier live rows plus the
    new window's, each request once (its earliest copy), the newest `max_rows` kept.

    Rows without a logging time (files of older versions) count as the oldest; rows
    without a source are named by the caller before they come here.
    """
    frames = [f for f in (earlier, window) if not f.empty]
    if not frames:
        return window.iloc[0:0]
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    if LIVE_REQUEST_ID in rows.columns:
        ids = rows[LIVE_REQUEST_ID]
        rows = rows[ids.isna() | ~ids.duplicated(keep="first")]
    if LIVE_LOGGED_AT in rows.columns:
        order = pd.to_numeric(rows[LIVE_LOGGED_AT], errors="coerce").fillna(float("-inf"))
        rows = rows.iloc[order.argsort(kind="stable").to_numpy()]
    return rows.tail(max_rows).reset_index(drop=True)


def is_artifact_uri(location: str) -> bool:
    """An MLflow artifact URI (``runs:/…``, ``mlflow-artifacts:/…``, ``s3://…``), not a path."""
    scheme = urlparse(location).scheme
    return len(scheme) > 1 and scheme != "file"


def fetch_live_rows(settings: Settings, location: str) -> Path:
    """A local copy of a retrain's live rows: a path as it is, an artifact URI (what the
    monitor hands the train deployment) downloaded once into a temporary folder, so the
    worker that trains needs no disk shared with the monitor."""
    if not is_artifact_uri(location):
        return Path(location)
    import hashlib
    import tempfile

    import mlflow

    folder = Path(tempfile.gettempdir()) / "driftloop-live-rows"
    folder /= hashlib.sha256(location.encode()).hexdigest()[:16]
    cached = folder / Path(urlparse(location).path).name
    if cached.is_file():
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location,
            dst_path=str(folder),
            tracking_uri=settings.resolved_tracking_uri(),
        )
    )


def append_recent(snapshot: Snapshot, path: Path, name: str | None = None) -> Snapshot:
    """Add recent labelled rows (same columns) to the training snapshot.

    Each added row's origin is its `LIVE_SOURCE` value when the file has one (rows
    carried over from earlier retrains name their own window), else ``live window
    <name>`` (`name` defaults to the path: the artifact URI a download came from):
    contract failures count offending rows per origin.
    """
    from data.sources import load_table

    recent = load_table(path)
    name = name or str(path)
    missing = [c for c in [*snapshot.features, snapshot.target] if c not in recent.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} that the model needs")
    here = f"live window {name}"
    sources = (
        recent[LIVE_SOURCE].fillna(here).astype(str).to_numpy()
        if LIVE_SOURCE in recent.columns
        else [here] * len(recent)
    )
    columns = list(snapshot.frame.columns)
    recent = recent[[c for c in columns if c in recent.columns]].copy()
    time_column = snapshot.time_column
    if time_column and time_column not in recent.columns:
        # Logged traffic carries features, not the training time column: it is more
        # recent than every training row, so it goes after them, in log order.
        last = float(snapshot.frame[time_column].max())
        recent[time_column] = last + (1 + pd.RangeIndex(len(recent)).to_numpy()) / (len(recent) + 1)
    before = (
        snapshot.provenance
        if snapshot.provenance is not None
        else pd.Series(snapshot.source, index=snapshot.frame.index)
    )
    origin = pd.concat([before, pd.Series(sources, index=recent.index)], ignore_index=True)
    frame = pd.concat([snapshot.frame, recent], ignore_index=True)
    if snapshot.time_column:
        order = frame[snapshot.time_column].argsort(kind="stable").to_numpy()
        frame = frame.iloc[order].reset_index(drop=True)
        origin = origin.iloc[order].reset_index(drop=True)
    appended = load_snapshot_from_frame(snapshot, frame)
    return replace(appended, provenance=origin, source=f"{snapshot.source} + live window {name}")


def shuffled(snapshot: Snapshot, seed: int) -> Snapshot:
    """The snapshot with its target permuted (a deliberately useless model)."""
    from dataclasses import replace

    frame = snapshot.frame.copy()
    frame[snapshot.target] = frame[snapshot.target].sample(frac=1.0, random_state=seed).to_numpy()
    return replace(snapshot, frame=frame)


def result_markdown(result: TrainResult) -> str:
    lines = [
        f"# {result.model_name} v{result.version} → **{result.alias}**",
        "",
        f"{result.reason}",
        "",
        f"family `{result.family}`, task `{result.task}`, data digest `{result.data_digest}`, "
        f"rows {json.dumps(result.rows)}",
        "",
        result.task_explanation,
        "",
        "| metric | new | champion |",
        "|---|---|---|",
    ]
    for name, value in result.metrics.items():
        old = (result.champion_metrics or {}).get(name)
        lines.append(f"| {name} | {value:.4g} | {'' if old is None else f'{old:.4g}'} |")
    if result.bento_tag:
        lines += ["", f"Bento: `{result.bento_tag}`"]
    return "\n".join(lines)
