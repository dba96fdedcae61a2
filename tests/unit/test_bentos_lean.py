"""`bentos.lean`: the pipeline's answers, exactly, without sklearn's per-call overhead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from bentos.lean import LeanPipeline, LeanTrees, lean_estimator, lean_pipeline
from bentos.schema import RecordSchema
from bentos.store import direct_predict, example_batch, verified_lean
from pipelines.families import FitConfig
from pipelines.families.sklearn_hgb import build_pipeline

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May"]
SKIES = ["clear", "misty", "rain"]


def training_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "mnth": rng.choice(MONTHS, n),
            "sky": rng.choice(SKIES, n),
            "hr": rng.integers(0, 24, n).astype(float),
            "temp": rng.normal(0.5, 0.2, n),
        }
    )
    y = frame["hr"] * 3 + frame["temp"] * 10 + (frame["sky"] == "rain") * -5 + rng.normal(0, 1, n)
    return frame, y.to_numpy(), (y > y.median()).to_numpy().astype(int)


def product_pipeline(task: str) -> Pipeline:
    """The sklearn family's own pipeline (what `driftloop train` fits), fitted."""
    frame, y, labels = training_frame()
    config = FitConfig(task=task, categorical=("mnth", "sky"), numeric=("hr", "temp"), seed=1)
    pipeline = build_pipeline(config)
    return pipeline.fit(frame, y if task == "regression" else labels)


REGRESSOR = product_pipeline("regression")
CLASSIFIER = product_pipeline("classification")

category = st.sampled_from([*MONTHS, "Dec", ""])  # "Dec" and "" were never seen
rows = st.fixed_dictionaries(
    {
        "mnth": category,
        "sky": st.sampled_from([*SKIES, "fog"]),
        "hr": st.floats(-5, 30, allow_nan=False),
        "temp": st.floats(-1, 2) | st.just(float("nan")),  # a missing value takes its branch
    }
)


def equal(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    same_nans = a.dtype.kind in "fc"  # a missing value stays missing in both
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, same_nans)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, min_size=1, max_size=40))
def test_the_product_pipelines_answer_exactly_as_sklearn(records: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(records)
    for pipeline in (REGRESSOR, CLASSIFIER):
        lean = lean_pipeline(pipeline)
        assert isinstance(lean, LeanPipeline)
        assert equal(lean.predict(frame), pipeline.predict(frame))
        assert equal(lean.transform(frame), pipeline[0].transform(frame))
    lean = lean_pipeline(CLASSIFIER)
    assert lean is not None
    assert equal(lean.predict_proba(frame), CLASSIFIER.predict_proba(frame))


def test_the_trees_are_summed_directly_into_the_same_floats() -> None:
    """The estimators of the product pipelines get `LeanTrees`' raw predictions (the
    originals keep sklearn's); a multiclass model (one tree per class and iteration)
    and odd inputs (1 row, NaN, a float32 or list input) give what sklearn gives."""
    frame, y, _ = training_frame()
    three = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    config = FitConfig(task="classification", categorical=("mnth", "sky"), numeric=("hr", "temp"))
    multiclass = build_pipeline(config).fit(frame, three)
    for pipeline in (REGRESSOR, CLASSIFIER, multiclass):
        lean = lean_pipeline(pipeline)
        assert lean is not None
        raw = lean.estimator._raw_predict
        assert isinstance(getattr(raw, "__self__", None), LeanTrees)
        assert not isinstance(getattr(pipeline[-1]._raw_predict, "__self__", None), LeanTrees)
        features = pipeline[0].transform(frame)
        features[::7, -1] = np.nan
        for X in (features, features[:1], features.astype(np.float32), features[:3].tolist()):
            assert equal(raw(X), pipeline[-1]._raw_predict(X))
        assert equal(lean.estimator.predict(features), pipeline[-1].predict(features))
        if hasattr(pipeline[-1], "predict_proba"):
            got, want = lean.estimator.predict_proba(features), pipeline[-1].predict_proba(features)
            assert equal(got, want)


def test_trees_over_categorical_features_are_left_to_sklearn() -> None:
    frame, y, _ = training_frame()
    native = HistGradientBoostingRegressor(max_iter=5, categorical_features=[0])
    native.fit(frame[["sky", "hr"]].assign(sky=frame["sky"].map(SKIES.index)), y)
    assert lean_estimator(native) is native
    plain = LinearRegression().fit(frame[["hr", "temp"]], y)
    assert lean_estimator(plain) is plain


@pytest.mark.parametrize(
    "dtypes",
    [{"hr": "int64"}, {"hr": "int32", "temp": "float32"}, {"hr": "bool"}, {"hr": "object"}],
)
def test_pass_through_columns_of_other_dtypes_are_stacked_as_sklearn_does(
    dtypes: dict[str, str],
) -> None:
    frame, y, _ = training_frame()
    encode = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sky"]),
            ("n", "passthrough", ["hr", "temp"]),
        ]
    )
    pipeline = Pipeline([("encode", encode), ("model", LinearRegression())]).fit(frame, y)
    lean = lean_pipeline(pipeline)
    assert lean is not None
    probe = frame.head(9).astype(dtypes)
    assert equal(lean.transform(probe), encode.transform(probe))
    assert equal(lean.predict(probe), pipeline.predict(probe))


@pytest.mark.parametrize("odd", [None, np.nan, 3, 2.5])
def test_a_non_string_category_goes_through_sklearn(odd: Any) -> None:
    frame, _, _ = training_frame(5, seed=3)
    frame["mnth"] = frame["mnth"].astype(object)
    frame.loc[1, "mnth"] = odd
    lean = lean_pipeline(REGRESSOR)
    assert lean is not None
    assert equal(lean.predict(frame), REGRESSOR.predict(frame))


def test_unknown_categories_raise_as_sklearn_does_when_not_ignored() -> None:
    frame, y, _ = training_frame()
    encode = ColumnTransformer([("c", OneHotEncoder(sparse_output=False), ["mnth", "sky"])])
    pipeline = Pipeline([("encode", encode), ("model", LinearRegression())]).fit(frame, y)
    lean = lean_pipeline(pipeline)
    assert lean is not None
    known = frame.head(4)
    assert equal(lean.predict(known), pipeline.predict(known))
    unknown = known.assign(sky="fog")
    with pytest.raises(ValueError, match="unknown categor"):
        pipeline.predict(unknown)
    with pytest.raises(ValueError, match="unknown categor"):
        lean.predict(unknown)


def test_steps_between_the_columns_and_the_estimator_run_as_they_are() -> None:
    frame, y, _ = training_frame()
    frame = frame.drop(columns="mnth")
    encode = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sky"])],
        remainder="passthrough",  # hr and temp
    )
    steps = [("encode", encode), ("scale", StandardScaler()), ("skip", "passthrough")]
    pipeline = Pipeline([*steps, ("model", LinearRegression())]).fit(frame, y)
    lean = lean_pipeline(pipeline)
    assert lean is not None
    probe = frame.head(7).assign(sky=["fog", *frame["sky"].head(6)])
    assert equal(lean.predict(probe), pipeline.predict(probe))


def encoder_pipeline(**changes: Any) -> Pipeline:
    frame, y, _ = training_frame()
    options: dict[str, Any] = {"handle_unknown": "ignore", "sparse_output": False}
    options.update(changes.pop("encoder", {}))
    columns: dict[str, Any] = {"remainder": "drop"}
    columns.update(changes)
    encode = ColumnTransformer(
        [("c", OneHotEncoder(**options), ["mnth", "sky"]), ("n", "passthrough", ["hr"])],
        **columns,
    )
    return Pipeline([("encode", encode), ("model", HistGradientBoostingRegressor())]).fit(frame, y)


@pytest.mark.parametrize(
    "pipeline",
    [
        encoder_pipeline(encoder={"sparse_output": True}),
        encoder_pipeline(encoder={"drop": "first"}),
        encoder_pipeline(encoder={"max_categories": 2}),  # infrequent categories grouped
        encoder_pipeline(transformer_weights={"c": 2.0, "n": 1.0}),
        encoder_pipeline().set_output(transform="pandas"),
    ],
    ids=["sparse", "drop", "infrequent", "weights", "pandas-output"],
)
def test_encoders_it_does_not_mirror_exactly_are_left_to_sklearn(pipeline: Pipeline) -> None:
    assert lean_pipeline(pipeline) is None


def test_other_models_are_left_to_sklearn() -> None:
    frame, y, _ = training_frame()
    scaled = ColumnTransformer([("s", StandardScaler(), ["hr", "temp"])])
    numeric_categories = ColumnTransformer(
        [("c", OneHotEncoder(sparse_output=False), ["hr"])]
    )  # categories are numbers: sklearn compares them by value, not by dict lookup
    for encode in (scaled, numeric_categories):
        pipeline = Pipeline([("e", encode), ("m", LinearRegression())]).fit(frame, y)
        assert lean_pipeline(pipeline) is None
    assert lean_pipeline(LinearRegression().fit(frame[["hr"]], y)) is None
    assert lean_pipeline(HistGradientBoostingClassifier()) is None


def saved(tmp_path: Path, pipeline: Pipeline, **log: Any) -> Any:
    frame, _, _ = training_frame(8, seed=5)
    path = tmp_path / "model"
    mlflow.sklearn.save_model(
        pipeline,
        path,
        signature=infer_signature(frame, pipeline.predict(frame)),
        input_example=frame.head(3),
        serialization_format="pickle",
        **log,
    )
    return mlflow.pyfunc.load_model(str(path))


def test_a_served_sklearn_version_predicts_through_the_lean_pipeline(tmp_path: Path) -> None:
    pyfunc = saved(tmp_path, CLASSIFIER)
    schema = RecordSchema.from_mlflow(pyfunc.metadata.get_input_schema())
    direct = direct_predict(pyfunc, schema, example_batch(pyfunc, schema))
    assert direct is not None and direct.lean is not None
    frame, _, _ = training_frame(50, seed=9)
    assert equal(direct.predict(frame), pyfunc.predict(frame))


def test_a_version_served_by_another_predict_function_keeps_it(tmp_path: Path) -> None:
    pyfunc = saved(tmp_path, CLASSIFIER, pyfunc_predict_fn="predict_proba")
    frame, _, _ = training_frame(4, seed=2)
    assert verified_lean(pyfunc, frame) is None
