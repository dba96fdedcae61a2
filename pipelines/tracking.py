"""MLflow for flows: the tracking URI and experiment, and what a training run logs
(tags, params, metrics, datasets, plots, the model) and how it is labelled once its
version is known."""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.time import get_current_time_millis

from config.mlflow_store import sqlite_store_path, use_wal
from data.sources import numeric_as_float
from pipelines.evaluate import evaluation_plots
from registry import new_decision_id
from registry.decision import DECISION_KEY

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from mlflow.types.schema import Schema

    from config.settings import Settings
    from data.contract import Contract, ValidationReport
    from data.sources import Snapshot
    from pipelines.evaluate import Evaluation
    from pipelines.families import FittedModel


def configure_mlflow(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at `tracking_uri` and make sure `experiment` exists; returns its id.

    With the embedded SQLite store the experiment's artifacts go to the state
    folder (`artifact_root`), so `mlflow ui --backend-store-uri <same sqlite>`
    shows runs and artifacts. A server decides its own artifact location.
    """
    store = sqlite_store_path(tracking_uri)
    if store is not None:  # the embedded store: WAL mode before MLflow opens it
        use_wal(store)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = (artifact_root / experiment).as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(experiment)  # created concurrently
        if found is None:
            raise
        return found.experiment_id


# -- a training run -----------------------------------------------------------------------

REGISTRATION_KEY_TAG = "driftloop.registration_key"
MODEL_URI_TAG = "driftloop.model_uri"
RETRAIN_DATA_ARTIFACTS = "retrain_data"
"""The training run's folder of the live rows it added (the next retrain builds on them)."""
CONTRACT_ARTIFACT = "contract.json"  # on training and contract runs: the rules in force
REFERENCE_SAMPLE_ROWS = 5000  # training rows logged as the monitor's reference sample
UPLOAD_THREADS = 4  # artifact uploads of a training run in flight at once


@dataclass(frozen=True)
class TrainingRun:
    """Everything one training run logs besides the model's own parts."""

    settings: Settings
    experiment_id: str
    snapshot: Snapshot
    report: ValidationReport
    contract: Contract
    train: pd.DataFrame
    holdout: pd.DataFrame
    evaluation: Evaluation
    live_rows_file: Path | None = None  # the retrain's added live rows, logged for the next
    model_copy: Path | None = None
    """Where to keep a copy of the model folder `log_model` uploads (packaging imports it
    from there instead of downloading it again); None: no copy."""
    # Made once, with the run in the flow: the task's retries find what it logged.
    registration_key: str = field(default_factory=lambda: new_decision_id("train"))


def log_training_run(run: TrainingRun, fitted: FittedModel) -> tuple[str, str]:
    """One MLflow run with everything a reviewer needs; returns (run id, model URI).

    Round trips are few: the run is created with its tags; the model is logged first,
    so MLflow finds no run metrics to copy onto it one `get_metric_history` at a time;
    then params, metrics (linked to the logged model) and the model URI tag go in one
    `log_batch`, both datasets in one `log_inputs`. The permutation importance (predict
    calls: native code without the GIL) is computed in a worker thread meanwhile; the
    signature's predictions come first, before that thread starts (beside it, the
    200-row predict waited 0.3-0.4 s for the cores its OpenMP threads were spinning on).
    """
    settings, snapshot = run.settings, run.snapshot
    features = list(snapshot.features)
    signature = model_signature(run, fitted)
    with (
        ThreadPoolExecutor(1, thread_name_prefix="driftloop-importance") as pool,
        ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="driftloop-upload") as uploads,
        mlflow.start_run(
            experiment_id=run.experiment_id,
            run_name=f"{settings.family} {snapshot.digest[:8]}",
            tags=training_run_tags(run),
        ) as active,
    ):
        importance = pool.submit(
            importance_on_one_core, fitted, run.holdout[features], run.holdout[snapshot.target]
        )
        run_id = active.info.run_id
        params = training_params(run, fitted)
        model = log_fitted_model(run, fitted, params, signature)
        log_params_and_metrics(
            run_id,
            params,
            {f"holdout_{k}": v for k, v in run.evaluation.metrics.items()},
            fitted.history(),
            model_id=model.model_id,
            tags={MODEL_URI_TAG: model.model_uri},
        )
        log_datasets(snapshot, run.train, run.holdout)
        client = MlflowClient()
        pending = log_evaluation(run, importance.result(), uploads, run_id)
        if run.live_rows_file is not None:  # what the next drift retrain builds on
            pending.append(
                uploads.submit(
                    client.log_artifact, run_id, str(run.live_rows_file), RETRAIN_DATA_ARTIFACTS
                )
            )
        reference = run.train.sample(
            min(len(run.train), REFERENCE_SAMPLE_ROWS), random_state=settings.seed
        )
        # What the monitor compares against.
        pending.append(
            uploads.submit(log_frame, reference, "reference/train_sample.parquet", run_id)
        )
        for upload in pending:  # all uploaded (or the first failure raised) before the run ends
            upload.result()
    return run_id, model.model_uri


def importance_on_one_core(fitted: FittedModel, X: pd.DataFrame, y: pd.Series) -> pd.Series:
    """`fitted.feature_importance(X, y)` with this thread's OpenMP teams of one thread.

    It runs in a worker thread beside the model's save (Python, the GIL): with OpenMP's
    default of one thread per core its predict calls kept both cores busy and the save
    got what was left. ``omp_set_num_threads`` (threadpoolctl's OpenMP limit) sets the
    calling thread's own value, so the flow's thread keeps both cores for its own
    predict calls. Same predictions, same figures."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        return fitted.feature_importance(X, y)


def training_run_tags(run: TrainingRun) -> dict[str, str]:
    """The tags a training run is created with."""
    return {
        "driftloop.stage": "training",
        "driftloop.model_name": run.settings.model_name,
        REGISTRATION_KEY_TAG: run.registration_key,
        "family": run.settings.family,
        "task": run.snapshot.task,
        "data_digest": run.snapshot.digest,
    }


def training_params(run: TrainingRun, fitted: FittedModel) -> dict[str, Any]:
    """The run's params: the data's shape and split, the seed, the model's own params."""
    snapshot = run.snapshot
    return {
        "family": run.settings.family,
        "task": snapshot.task,
        "target": snapshot.target,
        "time_column": snapshot.time_column or "",
        "n_features": len(snapshot.features),
        "rows_train": len(run.train),
        "rows_holdout": len(run.holdout),
        "holdout_fraction": run.settings.holdout_fraction,
        "seed": run.settings.seed,
        **{f"model.{k}": v for k, v in fitted.params.items()},
    }


def log_datasets(snapshot: Snapshot, train: pd.DataFrame, holdout: pd.DataFrame) -> None:
    """The training and holdout rows as the run's dataset inputs (one `log_inputs`)."""
    datasets = []
    for name, frame in (("train", train), ("holdout", holdout)):
        dataset = mlflow.data.from_pandas(
            frame, source=snapshot.source, targets=snapshot.target, name=name
        )
        # `schema` is a cached property MLflow fills on first use (`to_dict`): fill it
        # with the same schema, found without MLflow's value-by-value scan.
        dataset.__dict__["schema"] = frame_schema(frame)
        datasets.append(dataset)
    mlflow.log_inputs(datasets=datasets, contexts=["training", "holdout"], tags_list=[None, None])


def frame_schema(frame: pd.DataFrame) -> Schema | None:
    """The MLflow schema `PandasDataset.schema` infers for `frame` (None where MLflow's
    inference fails), found column by column instead of value by value where the dtype
    says it all.

    MLflow (`mlflow.types.utils._infer_schema`) looks at every value in Python: a
    column is required when no value is None/NaN/NA/NaT, an object column's type comes
    from each value's. Here a non-object column's nulls are found with `isna` (its
    values are numbers, booleans or timestamps: the same test) and an object column of
    strings only (`infer_dtype(skipna=False)`: any None or NaN makes it "mixed") is a
    required string column; other object columns go through MLflow's own functions.
    """
    from mlflow.types.schema import ColSpec, DataType, Schema
    from mlflow.types.utils import _infer_pandas_column, _infer_required

    specs = []
    try:
        for name in frame.columns:
            column = frame[name]
            if column.dtype.kind != "O":
                kind, required = _infer_pandas_column(column), not bool(column.isna().any())
            elif pd.api.types.infer_dtype(column, skipna=False) == "string":
                kind, required = DataType.string, True
            else:
                kind, required = _infer_pandas_column(column), _infer_required(column)
            specs.append(ColSpec(type=kind, name=name, required=required))
    except Exception:  # MLflow's schema is None then too
        return None
    return Schema(specs)


def log_evaluation(
    run: TrainingRun,
    importance: pd.Series | None,
    uploads: Executor | None = None,
    run_id: str | None = None,
) -> list[Future[None]]:
    """The validation report, the schema, the feature importance and the plots.

    With `uploads` (and the `run_id`), each file is written and uploaded in that pool
    and the futures are returned (the caller waits for them before the run ends);
    without, one after the other into the active run."""
    snapshot, holdout = run.snapshot, run.holdout
    features = list(snapshot.features)
    client = MlflowClient()
    run_id = run_id or mlflow.active_run().info.run_id
    pending: list[Future[None]] = []

    def upload(log: Any, *args: Any) -> None:
        if uploads is None:
            log(run_id, *args)
        else:
            pending.append(uploads.submit(log, run_id, *args))

    upload(client.log_dict, run.report.to_dict(), "validation.json")
    upload(
        client.log_dict,
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
        upload(
            client.log_dict,
            {str(k): float(v) for k, v in importance.items()},
            "feature_importance.json",
        )
    # The plots show the labels serving gives (a classifier's recorded decision rule).
    # Drawn here, in this thread (matplotlib is not thread-safe); only the PNG's upload
    # goes to the pool.
    for name, figure in evaluation_plots(
        snapshot.task, holdout[snapshot.target], run.evaluation.predicted, importance
    ).items():
        png = io.BytesIO()
        figure.savefig(png, format="png")
        upload(log_bytes, png.getvalue(), f"plots/{name}")
    return pending


def log_bytes(run_id: str, data: bytes, artifact_file: str) -> None:
    """Log `data` as the file `artifact_file` (``folder/name``) of run `run_id`."""
    folder, _, name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        MlflowClient().log_artifact(run_id, str(path), folder or None)


def served_example(run: TrainingRun, rows: int) -> pd.DataFrame:
    """The first `rows` holdout rows as serving receives them: numeric features are
    declared double (a served request may carry a NaN or a float where training saw
    integers, and MLflow refuses float→long)."""
    snapshot = run.snapshot
    return numeric_as_float(run.holdout[list(snapshot.features)].head(rows), snapshot.numeric)


def model_signature(run: TrainingRun, fitted: FittedModel) -> ModelSignature:
    """The logged model's signature: inferred from 200 served holdout rows and the
    model's predictions on them."""
    from mlflow.models import infer_signature

    x_head = run.holdout[list(run.snapshot.features)].head(200)
    return infer_signature(served_example(run, 200), fitted.predict(x_head))


def log_fitted_model(
    run: TrainingRun,
    fitted: FittedModel,
    params: dict[str, Any] | None = None,
    signature: ModelSignature | None = None,
) -> ModelInfo:
    """Log the model with its signature (`model_signature` when None), input example,
    label rule and decision rule (and `params` on the logged model); returns its
    ModelInfo. The contract goes beside it (machines without it read it)."""
    from data.contract import LABEL_RULE_KEY, label_rule  # Great Expectations: import on use

    snapshot = run.snapshot
    served = served_example(run, 5)
    if signature is None:
        signature = model_signature(run, fitted)
    mlflow.log_dict(run.contract.to_dict(), CONTRACT_ARTIFACT)
    # Serving checks feedback labels against the target's contract rule (bentos.schema).
    rule = label_rule(run.contract, snapshot.task, run.train[snapshot.target])
    decision = run.evaluation.decision
    with keep_logged_model(run.model_copy):
        info = fitted.log_model(
            "model",
            input_example=served,
            signature=signature,
            metadata={
                LABEL_RULE_KEY: rule,
                **({DECISION_KEY: decision.to_dict()} if decision is not None else {}),
            },
            params=params,
        )
    return info


_keep_lock = threading.Lock()


@contextmanager
def keep_logged_model(dst: Path | None) -> Iterator[None]:
    """While inside, the model folder a ``log_model`` on this thread uploads is also copied
    to `dst` once its upload succeeded: the very files the logged model (and so the
    registered version) holds. No-op with `dst` None.

    MLflow writes the folder into a temporary directory, uploads it with the public
    ``MlflowClient.log_model_artifacts(model_id, local_dir)`` and deletes it; that method
    is wrapped for the duration (other threads, and later calls, go straight through).
    """
    if dst is None:
        yield
        return
    shutil.rmtree(dst, ignore_errors=True)  # an earlier attempt's copy
    with _keep_lock:
        original = MlflowClient.log_model_artifacts
        owner = threading.get_ident()

        def log_model_artifacts(
            self: MlflowClient, model_id: str, local_dir: str, artifact_path: str | None = None
        ) -> None:
            original(self, model_id, local_dir, artifact_path)
            if artifact_path is None and threading.get_ident() == owner and not dst.exists():
                shutil.copytree(local_dir, dst)

        MlflowClient.log_model_artifacts = log_model_artifacts  # type: ignore[method-assign]
        try:
            yield
        finally:
            MlflowClient.log_model_artifacts = original  # type: ignore[method-assign]


def log_frame(frame: pd.DataFrame, artifact_path: str, run_id: str | None = None) -> None:
    """Log a DataFrame as a Parquet artifact of run `run_id` (default: the active run)."""
    folder, name = artifact_path.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path)
        if run_id is None:
            mlflow.log_artifact(str(path), folder)
        else:
            MlflowClient().log_artifact(run_id, str(path), folder)


def log_params_and_metrics(
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    history: dict[str, list[float]] | None = None,
    client: MlflowClient | None = None,
    model_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Params, metrics, per-epoch `epoch_<name>` metrics and `tags` of a run in one
    `log_batch` (the client splits it only past the server's per-request limits).
    `client`: an `MlflowClient`, else one for the current tracking URI. `model_id`: the
    run's logged model, which gets the step-0 metrics too (as MLflow's `log_model`
    links them when the metrics come first)."""
    now = get_current_time_millis()
    entries = [
        Metric(name, float(value), now, 0, model_id=model_id) for name, value in metrics.items()
    ]
    for name, values in (history or {}).items():
        entries += [
            Metric(f"epoch_{name}", float(v), now, step, model_id=model_id if step == 0 else None)
            for step, v in enumerate(values)
        ]
    (client or MlflowClient()).log_batch(
        run_id,
        metrics=entries,
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in (tags or {}).items()],
        synchronous=True,
    )


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
