"""The training flow: load → validate → split → fit → evaluate → log and register →
package and index → gate.

`train_flow` reads as those steps; the Bento build and the OOD index run side by side
in Prefect's thread task runner. Each step is a Prefect task (I/O: loading, the
contract, fitting, the tracking server, the registry; those that talk to servers
carry retries with backoff and timeouts) or a plain function; the logic lives in
plain functions tested without Prefect: frame surgery in `data` (`data.sources`,
`data.split`, `data.live`), evaluation in `pipelines.evaluate`, what a training run
logs in `pipelines.tracking`, the gate in `pipelines.gate`, packaging in
`pipelines.package`, the registry in `registry`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
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
    Contract,
    ContractDiff,
    ContractViolation,
    ValidationReport,
    build_contract,
    diff,
    validate,
    widen,
)
from data.live import append_live_rows, live_holdout_rows
from data.sources import (
    Snapshot,
    load_dataset,
    load_table,
    numeric_as_float,
    snapshot_of_frame,
    with_shuffled_labels,
)
from data.split import select_rows, time_split, train_validation_split
from monitoring.heap import freeze_new_imports
from monitoring.metrics import primary_metric
from pipelines.evaluate import (
    Evaluation,
    evaluate_model,
    holdout_metrics,
    score_pyfunc,
)
from pipelines.families import require_family
from pipelines.gate import GateDecision, gate
from pipelines.package import package_version
from pipelines.tracking import (
    CONTRACT_ARTIFACT,
    MODEL_URI_TAG,
    REGISTRATION_KEY_TAG,
    TrainingRun,
    configure_mlflow,
    label_training_run,
    log_training_run,
)
from registry import AliasesMoved, Registry, VersionInfo
from registry.decision import DECISION_KEY, Decision, check_positive_class
from registry.environment import import_skops_without_torch, requirements_checked_by_name

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

    @classmethod
    def of(
        cls,
        run: TrainingRun,
        version: str,
        alias: str,
        reason: str,
        run_id: str,
        champion: ChampionScore,
        bento_tag: str | None,
    ) -> TrainResult:
        """The result of a training run registered as `version` and gated to `alias`."""
        snapshot = run.snapshot
        return cls(
            model_name=run.settings.model_name,
            version=version,
            alias=alias,
            reason=reason,
            family=run.settings.family,
            task=snapshot.task,
            metric=primary_metric(snapshot.task).name,
            metrics=run.evaluation.metrics,
            champion_version=champion.version,
            champion_metrics=champion.metrics,
            run_id=run_id,
            data_digest=snapshot.digest,
            bento_tag=bento_tag,
            rows={"train": len(run.train), "holdout": len(run.holdout)},
            task_explanation=run.evaluation.explanation,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChampionScore:
    """The current champion scored on the new holdout (all None: there is no champion)."""

    version: str | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None  # why it could not score (a different schema, a dependency)
    live_metrics: dict[str, float] | None = None  # on the holdout's live-window rows


# -- plain functions (tested without Prefect) -------------------------------------------


def local_contract_path(settings: Settings) -> Path:
    """Where this state folder keeps the model's contract (built, rebuilt or widened)."""
    return settings.state_path / "contracts" / f"{settings.model_name}.json"


def contract_path(settings: Settings) -> Path:
    """The model's contract: a local one in the state folder (built or rebuilt from data)
    wins over one committed in `data/contracts/`; a new one goes to the state folder."""
    local = local_contract_path(settings)
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
    local = local_contract_path(settings)
    if not rebuild and not local.exists() and shares_tracking_server(settings):
        logged = contract_from_tracking(settings)
        if logged is not None:
            logged.save(local)
            return logged, False
    path = contract_path(settings)
    if rebuild:
        path = local
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


def provenance_tags(
    data: str | None,
    time_from: float | None,
    time_until: float | None,
    live_rows: str | None,
    shuffle_labels: bool,
    check: ContractCheck,
) -> dict[str, str]:
    """Version tags naming what the version was trained from (a drift retrain repeats
    them: the data argument, the time range, the live rows it added) and the contract."""
    return {
        "data_source_arg": data or "",
        "time_from": "" if time_from is None else str(time_from),
        "time_until": "" if time_until is None else str(time_until),
        "recent_rows_added": live_rows or "",
        "shuffled_labels": str(shuffle_labels).lower(),
        "contract_revision": str(check.contract.revision),
        "contract_widened": check.widened.summary() if check.widened else "",
    }


def gate_decision(
    settings: Settings, task: str, evaluation: Evaluation, champion: ChampionScore, rows: int
) -> GateDecision:
    """The gate on the primary metric: the new version against the champion on the same
    holdout (`rows` rows), or on its live-window rows when a drift retrain has enough."""
    main = primary_metric(task)
    new, old, compared_on = evaluation.metrics, champion.metrics, "the same holdout"
    if evaluation.live is not None and evaluation.live_metrics is not None:
        new, old = evaluation.live_metrics, champion.live_metrics
        whole = f"{main.name} {evaluation.metrics[main.name]:.4g}"
        if champion.metrics and main.name in champion.metrics:
            whole += f" vs {champion.metrics[main.name]:.4g}"
        compared_on = (
            f"the {int(evaluation.live.sum())} live-window rows of the same holdout (the "
            f"traffic it will serve; whole holdout of {rows} rows: {whole})"
        )
    return gate(
        main.name,
        new[main.name],
        old.get(main.name) if old else None,
        main.higher_is_better,
        settings.promotion_margin,
        settings.promotion_policy,
        champion_version=champion.version,
        champion_error=champion.error,
        losers_as_challenger=settings.gate_losers_as_challenger,
        compared_on=compared_on,
    )


def gate_figures(evaluation: Evaluation, champion: ChampionScore) -> dict[str, float]:
    """The figures an alias move records: ``new_*``, ``champion_*`` and, for a drift
    retrain, ``live_holdout_rows``, ``live_new_*`` and ``live_champion_*``."""
    figures = {f"new_{k}": v for k, v in evaluation.metrics.items()}
    if champion.metrics:
        figures.update({f"champion_{k}": v for k, v in champion.metrics.items()})
    if evaluation.live is not None and evaluation.live_metrics is not None:
        figures["live_holdout_rows"] = int(evaluation.live.sum())
        figures.update({f"live_new_{k}": v for k, v in evaluation.live_metrics.items()})
        if champion.live_metrics:
            figures.update({f"live_champion_{k}": v for k, v in champion.live_metrics.items()})
    return figures


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

    downloads = Path(tempfile.gettempdir()) / "driftloop-live-rows"
    folder = downloads / hashlib.sha256(location.encode()).hexdigest()[:16]
    prune_live_downloads(downloads, keep=folder)
    cached = folder / Path(urlparse(location).path).name
    if cached.is_file():
        os.utime(folder)  # in use: not pruned for another LIVE_DOWNLOAD_KEEP_S
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location,
            dst_path=str(folder),
            tracking_uri=settings.resolved_tracking_uri(),
        )
    )


LIVE_DOWNLOAD_KEEP_S = 7 * 86_400
"""A downloaded retrain file unused for this long is removed at the next download (s)."""


def prune_live_downloads(downloads: Path, keep: Path) -> None:
    """Remove the downloaded live-row folders under `downloads` not used for
    `LIVE_DOWNLOAD_KEEP_S` (their folder's mtime), except `keep`: the temporary folder
    holds one per retrain, and nothing else would ever clear it."""
    import shutil

    if not downloads.is_dir():
        return
    cutoff = time.time() - LIVE_DOWNLOAD_KEEP_S
    for folder in downloads.iterdir():
        try:
            stale = folder != keep and folder.is_dir() and folder.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile by another worker
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def check_labels(settings: Settings, snapshot: Snapshot) -> None:
    """A classifier's ``positive_class`` setting must be one of the labels (checked before
    fitting, so a typo costs no training)."""
    if snapshot.task == "classification" and settings.positive_class:
        check_positive_class(
            snapshot.frame[snapshot.target].dropna().unique(), settings.positive_class
        )


# -- tasks --------------------------------------------------------------------------------


@task(name="load-data", **LOCAL)
def load_data(settings: Settings, time_from: float | None, time_until: float | None) -> Snapshot:
    snapshot = load_dataset(settings.dataset_spec(), settings.task)
    if time_from is not None or time_until is not None:
        frame = select_rows(snapshot.frame, snapshot.time_column, time_from, time_until)
        snapshot = snapshot_of_frame(snapshot, frame)
    get_run_logger().info(
        "loaded %s rows × %s features from %s (digest %s, task %s)",
        len(snapshot.frame),
        len(snapshot.features),
        snapshot.source,
        snapshot.digest,
        snapshot.task,
    )
    return snapshot


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
    local = local_contract_path(settings)
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
    logger = get_run_logger()
    check = check_contract(settings, snapshot, rebuild_contract, widen_contract)
    if check.built:
        logger.info("built a new data contract at %s", check.path)
    if check.widened is not None:
        log_widened_contract(experiment_id, snapshot, check)
        logger.info("data contract widened to admit drift: %s", check.widened.summary())
    if not check.report.success:
        reject_data(experiment_id, snapshot, check)
    logger.info("data contract passed: %s checks", check.report.evaluated)
    return check


def log_widened_contract(experiment_id: str, snapshot: Snapshot, check: ContractCheck) -> None:
    """A run of its own for a widened contract: the new revision, the diff and the
    verdict before widening."""
    import mlflow

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
        mlflow.log_dict(check.contract.to_dict(), CONTRACT_ARTIFACT)
        if check.widened is not None:
            mlflow.log_dict(check.widened.to_dict(), "contract_diff.json")
        if check.first is not None:
            mlflow.log_dict(check.first.to_dict(), "validation_before_widening.json")


def reject_data(experiment_id: str, snapshot: Snapshot, check: ContractCheck) -> None:
    """Log a FAILED run with the validation report, then raise `ContractViolation`."""
    import mlflow

    report = check.report
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
    run: TrainingRun, fitted: Any, parent_version: str | None, extra_tags: dict[str, str]
) -> tuple[str, str, VersionInfo | None]:
    """One MLflow run with everything a reviewer needs (`pipelines.tracking`), then a new
    registry version; returns (version, run id, the version as registered: None when a
    retry found an earlier attempt's registration).

    Idempotent under retries: the flow creates `run.registration_key` once, fresh, for
    this call; the run and the version carry it. A retry returns the version already
    registered under it, or registers the model a finished earlier attempt logged,
    instead of logging and registering a duplicate. The first attempt skips those
    look-ups: nothing can carry a key made for it.
    """
    from prefect.runtime import task_run

    settings, evaluation = run.settings, run.evaluation
    registry = Registry.from_settings(settings)
    tags = version_tags(
        run.snapshot, run.report, settings.family, evaluation.metrics, parent_version
    )
    tags.update(extra_tags)
    if evaluation.decision is not None:
        tags.update(evaluation.decision.tags())
    # run_count is 1 on a task's first attempt (0 outside a task run: look up then).
    first_attempt = task_run.run_count == 1
    if not first_attempt:
        earlier = earlier_registration(registry, run.experiment_id, run.registration_key, tags)
        if earlier is not None:
            get_run_logger().info("retry: v%s was already registered from run %s", *earlier)
            return (*earlier, None)
    run_id, model_uri = log_training_run(run, fitted)
    version = registry.register(
        model_uri, run_id, tags, registration_key=run.registration_key, fresh_key=first_attempt
    )
    get_run_logger().info("registered %s version %s", settings.model_name, version.version)
    return version.version, run_id, version


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


@task(name="score-champion", **SERVER_RETRIES, timeout_seconds=300)
def score_champion(
    settings: Settings,
    snapshot: Snapshot,
    holdout: pd.DataFrame,
    live: np.ndarray | None = None,
) -> ChampionScore:
    """The current champion's metrics on the new holdout (and on its `live` rows)."""
    import mlflow

    champion = Registry.from_settings(settings).by_alias(CHAMPION)
    if champion is None:
        return ChampionScore()
    try:
        import_skops_without_torch()  # MLflow loads sklearn models with skops
        with requirements_checked_by_name():
            model = mlflow.pyfunc.load_model(champion_model_location(settings, champion))
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
        return ChampionScore(champion.version, error=message)
    y = holdout[snapshot.target]
    metrics = holdout_metrics(snapshot.task, y, predictions, proba, classes)
    live_metrics = None
    if live is not None:
        live_metrics = holdout_metrics(snapshot.task, y, predictions, proba, classes, live)
    return ChampionScore(champion.version, metrics, None, live_metrics)


def champion_model_location(settings: Settings, champion: VersionInfo) -> str:
    """Where the champion's model loads from: the copy packaging put in this state
    folder's BentoML store for this very version (the same MLflow run: no download,
    versions are immutable), else its registry URI (downloaded from the tracking server).

    BentoML is imported only when its store holds this model at all (a run with
    ``package_bento=False`` on a machine that never packaged it pays no import)."""
    folder = settings.resolved_bentoml_home() / "models" / settings.model_name.lower()
    if not champion.run_id or not (folder / f"v{champion.version}").is_dir():
        return champion.model_uri
    from bentos.store import LABEL_RUN_ID, MLFLOW_MODEL_FOLDER, bentoml_home, local_model

    with bentoml_home(settings.resolved_bentoml_home()):
        stored = local_model(settings.model_name, champion.version)
    if stored is None or stored.info.labels.get(LABEL_RUN_ID) != champion.run_id:
        return champion.model_uri
    path = Path(stored.path_of(MLFLOW_MODEL_FOLDER))
    return str(path) if (path / "MLmodel").is_file() else champion.model_uri


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
            crown(registry, version, reason, figures, champion_version, decision_id)
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


def crown(
    registry: Registry,
    version: str,
    reason: str,
    figures: dict[str, float],
    champion_version: str | None,
    decision_id: str,
) -> None:
    """Make `version` champion, expecting `champion_version` still to be it (the first
    champion: expecting none); raises `AliasesMoved` when another move came first."""
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
        return
    registry.promote(
        version,
        reason,
        "train-flow",
        figures,
        expected={CHAMPION: champion_version},
        decision_id=decision_id,
    )


# -- the flow -----------------------------------------------------------------------------


@contextmanager
def in_process_run() -> Iterator[None]:
    """Prefect settings for flow runs started in this process (`driftloop train`, not a
    deployment's run on a worker): no flow-run heartbeats, unless
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (or a Prefect profile) sets them.

    Heartbeats let an automation mark a flow run as crashed when its process vanished;
    Prefect documents them for deployment runs, which keep them (the worker's process
    does not pass through here). At the end of a run Prefect joins the heartbeat
    thread, which sleeps in 1 s steps: up to a second, half a second on average, of
    waiting per in-process run.

    The current settings are copied with that one field changed (microseconds), not
    re-validated from every source as ``temporary_settings(set_defaults=...)`` does
    (0.05-0.15 s per run); a frequency the current settings got from the user (the
    environment, a profile, ``temporary_settings``) is among the flow settings' set
    fields and is left as it is.
    """
    import prefect.context

    context = prefect.context.get_settings_context()
    flows = context.settings.flows
    if "heartbeat_frequency" in flows.model_fields_set:
        yield
        return
    quiet = context.settings.model_copy(
        update={"flows": flows.model_copy(update={"heartbeat_frequency": None})}
    )
    with prefect.context.SettingsContext(profile=context.profile, settings=quiet):
        yield


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
    live_rows: str | None = None,
    package_bento: bool = True,
    shuffle_labels: bool = False,
    rebuild_contract: bool = False,
    widen_contract: bool = False,
) -> dict[str, Any]:
    """Train one model version on validated data and register it behind the gate.

    `time_from`/`time_until` restrict training to a time range (e.g. the demo's
    January–March); `live_rows` (a path or an artifact URI) appends recent labelled
    traffic (a drift retrain). `shuffle_labels` trains on permuted labels: a deliberately
    bad model for rollback drills and the demo; never use it otherwise.
    `rebuild_contract` rebuilds the data contract from this data (when the schema
    changed on purpose); `widen_contract` lets ranges and feature categories grow to
    admit drifted data (a new contract revision, logged with its diff) while hard rules
    still stop the flow.
    """
    # What the process imported so far leaves the cyclic collector's walks, here and
    # after the steps that import libraries lazily (monitoring/heap.py).
    freeze_new_imports()
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
    snapshot, live_file = load_training_data(settings, (time_from, time_until), live_rows)
    check = validate_data(settings, snapshot, experiment_id, rebuild_contract, widen_contract)
    freeze_new_imports()  # Great Expectations
    check_labels(settings, snapshot)
    if shuffle_labels:
        snapshot = with_shuffled_labels(snapshot, settings.seed)
    train, holdout = time_split(
        snapshot.frame, snapshot.time_column, settings.holdout_fraction, seed=settings.seed
    )
    live = live_holdout_rows(snapshot, holdout)
    fitted = fit(settings, snapshot, train)
    freeze_new_imports()  # the model family's libraries
    champion = score_champion(settings, snapshot, holdout, live)
    evaluation = evaluate_model(fitted, snapshot, train, holdout, settings, live)
    get_run_logger().info(evaluation.explanation)
    data_used = (snapshot, check.report, check.contract, train, holdout)
    tags = provenance_tags(data, time_from, time_until, live_rows, shuffle_labels, check)
    # The model folder `log_model` uploads is kept here for packaging (no download back).
    # The run's MLflow labels (name, note, the champion's figures) need only the version:
    # written in a thread while the Bento is built and the gate applied; the flow fails
    # if they fail, as before.
    with (
        tempfile.TemporaryDirectory(prefix="driftloop-logged-model-") as kept,
        ThreadPoolExecutor(1, thread_name_prefix="driftloop-label") as labels,
    ):
        model_copy = Path(kept) / "model" if package_bento else None
        run = TrainingRun(
            settings,
            experiment_id,
            *data_used,
            evaluation,
            live_rows_file=live_file,
            model_copy=model_copy,
        )
        version, run_id, registered = log_and_register(run, fitted, champion.version, tags)
        freeze_new_imports()  # MLflow's flavour, skops, matplotlib
        labelled = labels.submit(
            label_training_run,
            settings,
            run_id,
            version,
            snapshot,
            len(holdout),
            champion.version,
            champion.metrics,
        )
        bento_tag = (
            package_and_index(settings, version, snapshot, train, model_copy, registered)
            if package_bento
            else None
        )
        decision = gate_decision(settings, snapshot.task, evaluation, champion, len(holdout))
        figures = gate_figures(evaluation, champion)
        alias, reason = apply_gate(
            settings, version, decision, figures, champion.version, f"gate-{run.registration_key}"
        )
        labelled.result()
    result = TrainResult.of(run, version, alias, reason, run_id, champion, bento_tag)
    publish_result(result)
    return result.to_dict()


def load_training_data(
    settings: Settings,
    time_range: tuple[float | None, float | None],
    live_rows: str | None,
) -> tuple[Snapshot, Path | None]:
    """The training data: the time range of the data source, plus the `live_rows` a
    drift retrain adds; returns it and the local file of the live rows."""
    snapshot = load_data(settings, *time_range)
    live_file = fetch_live_rows(settings, live_rows) if live_rows else None
    if live_rows and live_file:
        snapshot = append_live_rows(snapshot, load_table(live_file), live_rows)
    return snapshot, live_file


def package_and_index(
    settings: Settings,
    version: str,
    snapshot: Snapshot,
    train: pd.DataFrame,
    logged_copy: Path | None = None,
    registered: VersionInfo | None = None,
) -> str:
    """Build the version's Bento and index its training sample for the OOD check, side
    by side (the index in a worker thread); the Bento tag. Both must succeed.
    `logged_copy`: the local copy of the model just logged (packaging imports it);
    `registered`: the version as registration answered (packaging reads it otherwise)."""
    indexing = index_reference.submit(settings, version, snapshot, train)
    try:
        bento_tag = package_version(settings, version, logged_copy, registered)
    finally:
        indexing.wait()
    indexing.result()
    return bento_tag


def publish_result(result: TrainResult) -> None:
    """The result as a Markdown artifact of the flow run (the Prefect UI shows it)."""
    create_markdown_artifact(
        key=f"train-{result.model_name}".lower().replace("_", "-").replace(".", "-"),
        markdown=result_markdown(result),
        description=f"{result.model_name} v{result.version}",
    )


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
