"""Input validation from a model signature: what callers see in a 422, what the model gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema, TensorSpec

from bentos.schema import LabelSchema, RecordSchema, SchemaError, jsonable_predictions


@pytest.fixture
def schema() -> RecordSchema:
    return RecordSchema.from_mlflow(
        Schema(
            [
                ColSpec("double", "temp"),
                ColSpec("long", "hr"),
                ColSpec("string", "weathersit"),
                ColSpec("boolean", "holiday"),
                ColSpec("double", "hum", required=False),
            ]
        )
    )


def good(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {"temp": 0.3, "hr": 8, "weathersit": "clear", "holiday": False}
    record.update(overrides)
    return record


def errors_of(schema: RecordSchema, records: object) -> list[dict[str, object]]:
    with pytest.raises(SchemaError) as info:
        schema.validate(records)
    return info.value.errors


def test_the_generated_pydantic_model_mirrors_the_signature(schema: RecordSchema) -> None:
    model = schema.pydantic_model()
    assert list(model.model_fields) == ["temp", "hr", "weathersit", "holiday", "hum"]
    assert model.model_fields["temp"].is_required()
    assert not model.model_fields["hum"].is_required()
    assert schema.describe()[0] == {
        "name": "temp",
        "type": "double",
        "required": True,
        "expected": "a number",
    }


def test_a_wrong_type_names_the_field_the_value_and_the_expectation(schema: RecordSchema) -> None:
    [error] = errors_of(schema, [good(temp="hot")])
    assert error["loc"] == ["records", 0, "temp"]
    assert error["msg"] == "expected a number, got 'hot'"
    assert error["input"] == "hot"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hr", 2.5, "expected an integer, got 2.5"),
        ("hr", "8", "expected an integer, got '8'"),
        ("weathersit", 3, "expected a string, got 3"),
        ("holiday", "no", "expected true or false, got 'no'"),
        ("temp", True, "expected a number, got true"),
        ("temp", None, "expected a number, got null"),
    ],
)
def test_types_are_strict(schema: RecordSchema, field: str, value: object, message: str) -> None:
    [error] = errors_of(schema, [good(**{field: value})])
    assert error["loc"] == ["records", 0, field]
    assert error["msg"] == message


def test_missing_and_unknown_features_are_named(schema: RecordSchema) -> None:
    record = good(wind=3)
    del record["hr"]
    errors = errors_of(schema, [good(), record])
    by_field = {e["loc"][-1]: e for e in errors}
    assert by_field["hr"]["loc"] == ["records", 1, "hr"]
    assert by_field["hr"]["msg"] == "missing feature 'hr' (expected an integer)"
    assert by_field["wind"]["msg"].startswith("unknown feature 'wind'; the model expects: temp, hr")


def test_every_bad_record_is_reported_not_only_the_first(schema: RecordSchema) -> None:
    errors = errors_of(schema, [good(temp="a"), good(), good(hr="b")])
    assert [e["loc"][:2] for e in errors] == [["records", 0], ["records", 2]]


def test_ids_are_kept_or_generated_and_entity_wins_for_routing(schema: RecordSchema) -> None:
    a, b, c = schema.validate(
        [good(request_id="req-1"), good(), good(request_id="req-3", entity_id=42)]
    )
    assert a.request_id == "req-1" and a.routing_key == "req-1"
    assert len(b.request_id) == 32 and b.request_id != a.request_id  # uuid4 hex
    assert c.entity_id == "42" and c.routing_key == "42"
    assert "request_id" not in a.features and "entity_id" not in c.features


def test_malformed_ids_are_refused(schema: RecordSchema) -> None:
    [error] = errors_of(schema, [good(request_id="has space")])
    assert error["loc"] == ["records", 0, "request_id"]
    assert "got 'has space'" in error["msg"]


def test_envelope_problems(schema: RecordSchema) -> None:
    assert errors_of(schema, [])[0]["msg"] == "expected at least one record, got an empty list"
    assert errors_of(schema, [5])[0]["msg"] == "expected an object of feature values, got 5"


def test_model_input_has_signature_columns_and_dtypes(schema: RecordSchema) -> None:
    records = schema.validate([good(hr=3, temp=1), good(hum=0.5)])
    frame = schema.frame(records)
    assert list(frame.columns) == ["temp", "hr", "weathersit", "holiday", "hum"]
    assert frame["temp"].dtype == np.float64 and frame["temp"].tolist() == [1.0, 0.3]
    assert frame["hr"].dtype == np.int64
    assert frame["holiday"].dtype == bool
    assert pd.isna(frame["hum"].iloc[0]) and frame["hum"].iloc[1] == 0.5


def test_a_model_without_column_signature_accepts_records_as_they_are() -> None:
    unchecked = RecordSchema.from_mlflow(None)
    [record] = unchecked.validate([{"anything": "goes", "request_id": "r1"}])
    assert not unchecked.checked and record.features == {"anything": "goes"}


def test_labels_follow_the_output_type() -> None:
    numeric = LabelSchema.from_mlflow(Schema([ColSpec("long")]))
    assert numeric.kind == "number"
    [label] = numeric.validate([{"request_id": "r1", "label": 12.0}])
    assert (label.request_id, label.label) == ("r1", 12.0)
    errors = errors_of_labels(numeric, [{"request_id": "r1", "label": "many"}, {"label": 3}])
    assert errors[0] == {
        "loc": ["labels", 0, "label"],
        "msg": "expected a number, got 'many'",
        "input": "many",
        "type": "number_type",
    }
    assert errors[1]["loc"] == ["labels", 1, "request_id"]
    tensor = LabelSchema.from_mlflow(Schema([TensorSpec(np.dtype("float64"), (-1,))]))
    assert tensor.kind == "number"


def errors_of_labels(schema: LabelSchema, labels: object) -> list[dict[str, object]]:
    with pytest.raises(SchemaError) as info:
        schema.validate(labels)
    return info.value.errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (np.array([1.5, 2.0]), [1.5, 2.0]),
        (np.array([[1.5], [2.0]]), [1.5, 2.0]),
        (np.array([[0.2, 0.8], [0.6, 0.4]]), [[0.2, 0.8], [0.6, 0.4]]),
        (pd.Series(np.array([1, 2], dtype=np.int64)), [1, 2]),
        (pd.DataFrame({"p": [0.1, 0.2]}), [0.1, 0.2]),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_predictions_become_one_json_value_per_record(raw: object, expected: list[object]) -> None:
    values = jsonable_predictions(raw, 2)
    assert values == expected
    assert all(type(v) in (float, int, str, list) for v in values)


def test_a_model_returning_the_wrong_number_of_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="returned 1 predictions for 2 records"):
        jsonable_predictions(np.array([1.0]), 2)
