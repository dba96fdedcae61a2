"""Loading a version: MLflow's second schema enforcement is skipped only when provably moot."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel, direct_predict, example_batch

FRAME = pd.DataFrame(
    {"temp": [0.1, 0.5, 0.9, 0.3], "hum": [0.2, 0.4, 0.6, 0.8], "hr": [1.0, 5.0, 9.0, 13.0]}
)
TARGET = np.array([1.0, 3.0, 5.0, 4.0])


def saved(tmp_path: Path, example: bool = True) -> object:
    model = LinearRegression().fit(FRAME, TARGET)
    folder = tmp_path / ("with" if example else "without")
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=infer_signature(FRAME, TARGET),
        input_example=FRAME.head(2) if example else None,
        pip_requirements=["scikit-learn"],
    )
    return mlflow.pyfunc.load_model(str(folder))


def loaded(pyfunc: object) -> LoadedModel:
    schema = RecordSchema.from_mlflow(pyfunc.metadata.get_input_schema())
    return LoadedModel(
        "1",
        "m:v1",
        pyfunc,
        schema,
        LabelSchema("number"),
        direct=direct_predict(pyfunc, schema, example_batch(pyfunc, schema)),
    )


def test_a_version_with_an_example_predicts_without_the_second_enforcement(
    tmp_path: Path,
) -> None:
    model = loaded(saved(tmp_path))
    assert model.direct is not None
    records = FRAME.to_dict(orient="records")
    batch = model.schema.validate_batch(records)
    expected = model.pyfunc.predict(model.schema.frame_of_batches([batch]))
    calls: list[int] = []
    original = model.pyfunc.predict
    model.pyfunc.predict = lambda frame: calls.append(len(frame)) or original(frame)  # type: ignore[method-assign]
    answers, _ = model.predict_batches([batch])
    assert calls == []  # MLflow's pyfunc.predict (and its enforcement) was not called
    assert answers == pytest.approx(list(expected))


def test_a_version_without_an_example_serves_through_pyfunc_predict(tmp_path: Path) -> None:
    model = loaded(saved(tmp_path, example=False))
    assert model.direct is None
    batch = model.schema.validate_batch(FRAME.head(1).to_dict(orient="records"))
    expected = model.pyfunc.predict(FRAME.head(1))
    assert model.predict_batches([batch])[0] == pytest.approx(list(expected))


def test_a_frame_of_other_dtypes_goes_through_mlflow(tmp_path: Path) -> None:
    model = loaded(saved(tmp_path))
    assert model.direct is not None
    odd = FRAME.astype({"hr": "object"})
    assert not model.direct.applies(odd)
