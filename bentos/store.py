"""Registered MLflow versions in the local BentoML model store, and loading them.

A version N of model ``bikeshare-demand`` is stored as the BentoML model
``bikeshare-demand:vN`` (labels: MLflow name, version, run id, data digest) and
packaged as the Bento ``bikeshare-demand-service:vN``. Once imported, a version
loads from the local store without MLflow, so the service survives the registry
being down, even across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
import yaml
from bentoml.exceptions import BentoMLException, NotFound

from bentos.lean import LeanPipeline, OneHotColumns, lean_pipeline
from bentos.schema import (
    LabelSchema,
    RecordSchema,
    ValidBatch,
    ValidRecord,
    jsonable_predictions,
)
from data.contract import LABEL_RULE_KEY
from registry import Registry, VersionInfo
from registry.decision import DECISION_KEY, Decision, class_key, probability_function
from registry.environment import (
    import_skops_without_torch,
    mismatch_warning,
    requirement_mismatches,
)

log = logging.getLogger("driftloop.serving")

LABEL_MODEL_NAME = "mlflow_model_name"
LABEL_VERSION = "mlflow_model_version"
LABEL_RUN_ID = "mlflow_run_id"
LABEL_DATA_DIGEST = "data_digest"
_COPIED_TAGS = ("family", "task")


def model_tag(model_name: str, version: str | int) -> str:
    """BentoML model tag of a registered version: ``<name>:v<N>`` (lowercase)."""
    return f"{model_name.lower()}:v{version}"


def service_tag(model_name: str, version: str | int) -> str:
    """Bento tag of a registered version: ``<name>-service:v<N>`` (lowercase)."""
    return f"{model_name.lower()}-service:v{version}"


def version_labels(info: VersionInfo) -> dict[str, str]:
    """Labels that tie a BentoML model or Bento back to its MLflow version."""
    labels = {
        LABEL_MODEL_NAME: info.name,
        LABEL_VERSION: info.version,
        LABEL_RUN_ID: info.run_id or "",
        LABEL_DATA_DIGEST: info.tags.get("data_digest", ""),
    }
    labels.update({key: info.tags[key] for key in _COPIED_TAGS if key in info.tags})
    return labels


@contextmanager
def bentoml_home(path: Path | None) -> Iterator[None]:
    """Point this process's BentoML model and bento stores at `path` for a while.

    BentoML resolves BENTOML_HOME once per process; packaging from a training
    flow must write to the state folder's store whatever the process started with.

    Private BentoML API, kept here only: BentoML 1.4 (checked against 1.4.40) has no
    public way to switch the store of a running process. ``BENTOML_HOME`` is read once,
    when its DI container is first used, and the public functions
    (``bentoml.models.get/create``, ``bentoml.bentos.build/get``) take the store only as the
    underscore-prefixed ``_model_store``/``_bento_store`` keyword, from that container. So
    the container's providers (``bentoml._internal.configuration.containers``) are set for
    the duration and put back afterwards.
    """
    if path is None:
        yield
        return
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = Path(path).expanduser().resolve()
    for sub in ("bentos", "models", "envs", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    providers = {
        BentoMLContainer.bentoml_home: str(home),
        BentoMLContainer.bento_store_dir: str(home / "bentos"),
        BentoMLContainer.model_store_dir: str(home / "models"),
        BentoMLContainer.env_store_dir: str(home / "envs"),
        BentoMLContainer.tmp_bento_store_dir: str(home / "tmp"),
        BentoMLContainer.bento_store: BentoStore(str(home / "bentos")),
        BentoMLContainer.tmp_bento_store: BentoStore(str(home / "tmp")),
        BentoMLContainer.model_store: ModelStore(str(home / "models")),
    }
    previous = {provider: provider.get() for provider in providers}
    env_before = os.environ.get("BENTOML_HOME")
    try:
        for provider, value in providers.items():
            provider.set(value)
        os.environ["BENTOML_HOME"] = str(home)
        yield
    finally:
        for provider, value in previous.items():
            provider.set(value)
        if env_before is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = env_before


def local_model(model_name: str, version: str | int) -> bentoml.Model | None:
    """The version's model in the local BentoML store, or None."""
    try:
        return bentoml.models.get(model_tag(model_name, version))
    except NotFound:
        return None


def import_version(
    registry: Registry,
    version: str | int,
    info: VersionInfo | None = None,
    logged_copy: Path | None = None,
) -> bentoml.Model:
    """Copy a registered version into the local BentoML store (no-op when already there).

    `info`: the version as the caller just read it (no second registry read).
    `logged_copy`: a local copy of the model folder the version was registered from (the
    training flow keeps what it uploaded, `pipelines.tracking.keep_logged_model`); used
    instead of downloading the model when its MLmodel names the version's run and logged
    model, else the model is downloaded from the registry as always.
    """
    existing = local_model(registry.model_name, version)
    if existing is not None:
        return existing
    info = info if info is not None else registry.get(version)
    tag = model_tag(info.name, info.version)
    with tempfile.TemporaryDirectory(prefix="driftloop-import-") as tmp:
        if logged_copy is not None and is_logged_model_of(logged_copy, info):
            source = logged_copy
        else:
            source = registry.download_model(info, Path(tmp) / "download")
        try:
            return bentoml.mlflow.import_model(
                tag,
                str(source),
                labels=version_labels(info),
                metadata={"mlflow_source": info.source, "tracking_uri": registry.tracking_uri},
            )
        except BentoMLException:
            # Another process imported the same version meanwhile: use theirs.
            found = local_model(info.name, info.version)
            if found is None:
                raise
            return found


def is_logged_model_of(folder: Path, info: VersionInfo) -> bool:
    """Whether `folder` holds the MLflow model version `info` was registered from: its
    MLmodel names the version's run and, for a ``models:/m-<id>`` source, that logged
    model."""
    try:
        mlmodel = yaml.safe_load((Path(folder) / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(mlmodel, dict) or not info.run_id or mlmodel.get("run_id") != info.run_id:
        return False
    if not info.source.startswith("models:/m-"):
        return True
    return mlmodel.get("model_id") == info.source.removeprefix("models:/")


@dataclass(frozen=True)
class LoadedModel:
    """One version ready to predict, with the schemas its signature implies."""

    version: str
    tag: str
    pyfunc: Any
    schema: RecordSchema
    label_schema: LabelSchema
    labels: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    decision: Decision | None = None
    """A classifier's recorded rule (positive class, threshold); None: labels only."""
    proba: Callable[[pd.DataFrame], Any] | None = None
    direct: DirectPredict | None = None
    """The model implementation's predict, for frames MLflow would not change (see
    `direct_predict`); None: every call goes through `pyfunc.predict`."""

    @property
    def scored(self) -> bool:
        """Whether answers carry class probabilities."""
        return self.decision is not None and self.proba is not None

    def predict(self, records: list[ValidRecord]) -> list[Any]:
        """One model call for a whole batch; one JSON value per record."""
        return self._answer(self.schema.frame(records), len(records))[0]

    def predict_batches(
        self, batches: Sequence[ValidBatch]
    ) -> tuple[list[Any], list[dict[str, float]] | None]:
        """One model call for several validated requests: one JSON value per record, in
        order, and for a scored classifier each record's ``{class: probability}``.

        Raises `NonFinitePredictions` when a numeric output holds NaN or infinity: that is
        a broken model, not an answer to give a caller.
        """
        frame = self.schema.frame_of_batches(batches)
        return self._answer(frame, sum(len(b) for b in batches))

    def _answer(
        self, frame: pd.DataFrame, n: int
    ) -> tuple[list[Any], list[dict[str, float]] | None]:
        if self.decision is None or self.proba is None:
            direct = self.direct
            if direct is not None and direct.applies(frame):
                raw = direct.predict(frame)
            else:
                raw = self.pyfunc.predict(frame)
            return jsonable_predictions(_finite(raw), n), None
        proba = _finite(np.asarray(self.proba(frame), dtype=np.float64))
        labels = jsonable_predictions(self.decision.labels(proba), n)
        keys = [class_key(c) for c in self.decision.classes]
        return labels, [dict(zip(keys, row, strict=True)) for row in proba.tolist()]


@dataclass(frozen=True)
class DirectPredict:
    """The model implementation's own predict, skipping MLflow's second schema enforcement.

    `RecordSchema` has already checked every value and built the frame with the
    signature's columns and dtypes; `pyfunc.predict` would enforce the same schema again
    (column by column, copying the frame) on every call. `direct_predict` checks once at
    load that enforcement leaves such a frame unchanged and that both calls agree; a frame
    with other dtypes (an optional column holding nulls) still goes through MLflow.
    """

    predict: Callable[[pd.DataFrame], Any]
    dtypes: tuple[Any, ...]
    lean: LeanPipeline | None = None
    """The pipeline's predict without sklearn's per-call overhead (`bentos.lean`), when
    verified; `predict` is then its predict."""

    def applies(self, frame: pd.DataFrame) -> bool:
        return tuple(frame.dtypes) == self.dtypes


class NonFinitePredictions(ValueError):
    """The model returned NaN or infinite predictions."""


def _finite(raw: Any) -> Any:
    """`raw` unchanged when its numeric values are all finite (one vectorised check)."""
    if isinstance(raw, pd.DataFrame | pd.Series):
        values = raw.select_dtypes("number") if isinstance(raw, pd.DataFrame) else raw
        if isinstance(raw, pd.Series) and not pd.api.types.is_numeric_dtype(raw.dtype):
            return raw
        array = values.to_numpy()
    elif isinstance(raw, np.ndarray):
        array = raw
    else:
        return raw
    if array.dtype.kind not in "fc":
        return raw
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise NonFinitePredictions(f"the model returned {bad} non-finite value(s) (NaN/inf)")
    return raw


MLFLOW_MODEL_FOLDER = "mlflow_model"  # where `bentoml.mlflow.import_model` puts the model


def load_model(model: bentoml.Model, check_requirements: bool = True) -> LoadedModel:
    """Load a stored version as an MLflow pyfunc (no network), warmed up.

    Before the version is handed to the follower (and /readyz can say ready) it answers
    its own input example once through the serving path, so the first caller does not
    pay the lazy imports, the schema's caches and the model's first-call costs.

    This is `bentoml.mlflow.load_model` (``mlflow.pyfunc.load_model`` of the stored
    folder) with MLflow's check of the model's pip requirements against this environment
    made separate: it reads the metadata of every installed package (0.7 s CPU of a cold
    worker's start). `check_requirements` False skips it; the caller then runs
    `warn_requirement_mismatches` once it serves (a restarted worker does).
    """
    if model.info.module not in ("bentoml.mlflow", "_bentoml_impl.frameworks.mlflow"):
        raise NotFound(f"model {model.tag} was not stored by bentoml.mlflow")
    import_skops_without_torch()
    import mlflow.pyfunc

    path = model.path_of(MLFLOW_MODEL_FOLDER)
    if check_requirements:
        warn_requirement_mismatches(path)
    pyfunc = mlflow.pyfunc.load_model(path, suppress_warnings=True)
    meta = pyfunc.metadata
    labels = dict(model.info.labels)
    version = labels.get(LABEL_VERSION) or str(model.tag.version).removeprefix("v")
    decision, proba = classifier_rule(pyfunc, (meta.metadata or {}).get(DECISION_KEY), version)
    schema = RecordSchema.from_mlflow(meta.get_input_schema())
    example = example_batch(pyfunc, schema)
    direct = direct_predict(pyfunc, schema, example)
    lean = direct.lean if direct is not None else None
    if lean is not None and proba is not None and proba == lean.pipeline.predict_proba:
        proba = lean.predict_proba  # checked against the pipeline's by verified_lean
    loaded = LoadedModel(
        version=version,
        tag=str(model.tag),
        pyfunc=pyfunc,
        schema=schema,
        label_schema=LabelSchema.from_mlflow(
            meta.get_output_schema(), (meta.metadata or {}).get(LABEL_RULE_KEY)
        ),
        labels=labels,
        decision=decision,
        proba=proba,
        direct=direct,
    )
    if example is not None:
        try:
            loaded.predict_batches([example])
        except Exception as exc:  # a model that fails on its own example fails callers too
            log.warning("version %s failed on its input example: %s", version, exc)
    return loaded


def warn_requirement_mismatches(path: str) -> None:
    """Warn, as ``mlflow.pyfunc.load_model`` does, when this environment does not satisfy
    the stored model's pip requirements or its Python version; never raises.

    MLflow's own check (``warn_dependency_requirement_mismatches``) first maps every
    installed module to its distribution (``packages_distributions``: the file list of
    every installed package, 0.7-1.1 s of CPU, more with cold caches) to find a version it
    then reads by distribution name anyway. Run in every worker right after start-up, and
    in the follower whenever a new version loads, that scan took the CPU the first
    requests needed. `registry.environment.requirement_mismatches` reads each required
    distribution's version directly (a few ms) and words the warning the same way."""
    try:
        from mlflow.models import Model
        from mlflow.pyfunc import FLAVOR_NAME, PY_VERSION, _get_pip_requirements_from_model_path
        from mlflow.pyfunc import _warn_potentially_incompatible_py_version_if_necessary as py

        mismatches = requirement_mismatches(_get_pip_requirements_from_model_path(path))
        if mismatches:
            log.warning(mismatch_warning(mismatches))
        flavor = Model.load(os.path.join(path, "MLmodel")).flavors.get(FLAVOR_NAME) or {}
        py(model_py_version=flavor.get(PY_VERSION))
    except Exception as exc:
        log.debug("could not check the requirements of %s: %s", path, exc)


def example_batch(pyfunc: Any, schema: RecordSchema) -> ValidBatch | None:
    """The version's logged input example as a validated batch, or None.

    None when the version has no example (or one our schema refuses): it then serves
    through `pyfunc.predict` without warm-up, as versions always did.
    """
    records = example_records(pyfunc)
    if records is None or not schema.checked:
        return None
    try:
        return schema.validate_batch(records)
    except Exception as exc:
        log.info("input example not usable for warm-up: %s", exc)
        return None


def example_records(pyfunc: Any) -> list[dict[str, Any]] | None:
    """The version's logged input example as JSON records (what a caller would send), or
    None without one."""
    example = getattr(pyfunc, "input_example", None)
    if not isinstance(example, pd.DataFrame) or example.empty:
        return None
    return json.loads(example.to_json(orient="records", date_format="iso"))


def direct_predict(
    pyfunc: Any, schema: RecordSchema, example: ValidBatch | None
) -> DirectPredict | None:
    """The implementation's predict when MLflow's enforcement provably changes nothing.

    Only for a plain column signature (no type-hint signature, no params schema) and a
    validated example: MLflow's `_enforce_schema` must return the frame `RecordSchema`
    builds with the same columns and dtypes, and both calls must give the same answers.
    Anything else (or any error while checking) keeps `pyfunc.predict`.
    """
    if example is None or not schema.checked:
        return None
    try:
        from mlflow.models.utils import _enforce_schema

        meta = pyfunc.metadata
        if meta._is_signature_from_type_hint() or meta._is_type_hint_from_example():
            return None
        if meta.get_params_schema() is not None:
            return None
        predict = pyfunc._predict_fn
        frame = schema.frame_of_batches([example])
        enforced = _enforce_schema(frame.copy(), meta.get_input_schema(), pyfunc.loader_module)
        if not isinstance(enforced, pd.DataFrame):
            return None
        if list(enforced.columns) != list(frame.columns) or tuple(enforced.dtypes) != tuple(
            frame.dtypes
        ):
            return None
        ours = np.asarray(predict(frame))
        theirs = np.asarray(pyfunc.predict(frame))
        if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            return None
    except Exception as exc:
        log.info("serving through pyfunc.predict (direct call not verified: %s)", exc)
        return None
    lean = verified_lean(pyfunc, frame)
    if lean is not None:
        return DirectPredict(lean.predict, tuple(frame.dtypes), lean)
    return DirectPredict(predict, tuple(frame.dtypes))


def verified_lean(pyfunc: Any, frame: pd.DataFrame) -> LeanPipeline | None:
    """`bentos.lean`'s version of an mlflow.sklearn pipeline's predict, when it answers
    exactly as the pipeline does on `frame` (the input example), on its first row alone and
    on it with every one-hot column set to a category the model never saw; else None.

    Reads MLflow's private ``PyFuncModel._model_impl``/``_predict_fn`` (checked against
    3.17: no public accessor says which function a pyfunc calls); if they change, this
    returns None and the version serves through its own predict, never a wrong answer."""
    impl = getattr(pyfunc, "_model_impl", None)
    raw = getattr(impl, "sklearn_model", None)
    if raw is None or getattr(pyfunc, "_predict_fn", None) != getattr(impl, "predict", None):
        return None  # not mlflow.sklearn, or a pyfunc_predict_fn other than predict
    try:
        lean = lean_pipeline(raw)
        if lean is None:
            return None
        unseen = frame.copy()
        for block in lean.blocks:
            if isinstance(block, OneHotColumns):
                for column in block.columns:
                    unseen[column] = "\x00driftloop-unseen-category"
        methods = ["predict"] + (["predict_proba"] if hasattr(raw, "predict_proba") else [])
        for probe in (frame, frame.head(1), unseen):
            for method in methods:
                if not _same_answers(getattr(raw, method), getattr(lean, method), probe):
                    log.info("serving through the pipeline's own predict (lean path differs)")
                    return None
    except Exception as exc:
        log.info("serving through the pipeline's own predict (lean path not verified: %s)", exc)
        return None
    return lean


def _same_answers(
    theirs: Callable[[pd.DataFrame], Any], ours: Callable[[pd.DataFrame], Any], frame: pd.DataFrame
) -> bool:
    """Whether both give equal arrays of the same dtype on `frame`, or both raise."""
    try:
        expected = np.asarray(theirs(frame.copy()))
    except Exception:
        expected = None
    try:
        got = np.asarray(ours(frame.copy()))
    except Exception:
        got = None
    if expected is None or got is None:
        return expected is None and got is None
    same_nans = expected.dtype.kind in "fc"  # a missing answer stays missing
    return expected.dtype == got.dtype and np.array_equal(expected, got, same_nans)


def classifier_rule(
    pyfunc: Any, recorded: dict[str, Any] | None, version: str
) -> tuple[Decision | None, Callable[[pd.DataFrame], Any] | None]:
    """The recorded decision rule and the model's predict_proba, or (None, None).

    A version registered before the rule was recorded, or whose model has no
    probabilities, answers with its own ``predict`` (labels only), as it always did.
    """
    if not recorded:
        return None, None
    found = probability_function(pyfunc)
    if found is None:
        log.warning("version %s records a decision rule but has no predict_proba", version)
        return None, None
    proba, classes = found
    decision = Decision.from_dict(recorded)
    if [class_key(c) for c in classes] != [class_key(c) for c in decision.classes]:
        log.warning(
            "version %s: the model's classes %s differ from the recorded %s; labels only",
            version,
            classes,
            list(decision.classes),
        )
        return None, None
    return decision, proba
