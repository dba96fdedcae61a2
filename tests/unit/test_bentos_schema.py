"""Input validation from a model signature: what callers see in a 422, what the model gets."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.types import ColSpec, Schema, TensorSpec

from bentos.schema import (
    LabelSchema,
    RecordSchema,
    SchemaError,
    ValidBatch,
    jsonable_predictions,
    new_request_ids,
)


def bikeshare_like() -> RecordSchema:
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


@pytest.fixture
def schema() -> RecordSchema:
    return bikeshare_like()


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
    [error] = errors_of(schema, [good(entity_id="user-1\n")])  # `$` alone would let it in
    assert error["loc"] == ["records", 0, "entity_id"]


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
        "type": "float_type",
    }
    assert errors[1]["loc"] == ["labels", 1, "request_id"]
    tensor = LabelSchema.from_mlflow(Schema([TensorSpec(np.dtype("float64"), (-1,))]))
    assert tensor.kind == "number"


YES_NO = {"target": "churned", "task": "classification", "kind": "categorical",
          "classes": ["No", "Yes"], "min": None, "max": None}  # fmt: skip
BIKERS = {"target": "bikers", "task": "regression", "kind": "numeric",
          "classes": None, "min": -324.0, "max": 976.0}  # fmt: skip


@pytest.mark.parametrize("bad", ["yes", "Maybe", 1, True, None, ["Yes"]])
def test_labels_outside_the_targets_classes_are_refused_naming_them(bad: object) -> None:
    schema = LabelSchema.from_mlflow(Schema([ColSpec("string")]), YES_NO)
    [error] = errors_of_labels(schema, [{"request_id": "r1", "label": bad}])
    assert error["loc"] == ["labels", 0, "label"]
    assert error["input"] == bad
    assert "of target 'churned'; allowed: 'No', 'Yes'" in str(error["msg"])
    [ok] = schema.validate([{"request_id": "r1", "label": "Yes"}])
    assert ok.label == "Yes"


def test_integer_and_boolean_classes_are_told_apart() -> None:
    ints = LabelSchema.from_mlflow(None, {**YES_NO, "classes": [0, 1]})
    assert [x.label for x in ints.validate([{"request_id": "a", "label": 1.0}])] == [1]
    for bad in (True, 2, "1"):
        [error] = errors_of_labels(ints, [{"request_id": "a", "label": bad}])
        assert "allowed: 0, 1" in str(error["msg"])
    flags = LabelSchema.from_mlflow(None, {**YES_NO, "classes": [False, True]})
    assert flags.kind == "boolean"
    [error] = errors_of_labels(flags, [{"request_id": "a", "label": 1}])
    assert "allowed: false, true" in str(error["msg"])


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        (2**64, "expected a number of target 'bikers' between -9.0072e+15 and 9.0072e+15, "
         "got 18446744073709551616"),
        (float("nan"), "expected a finite number of target 'bikers'"),
        (float("inf"), "expected a finite number of target 'bikers'"),
        ("12", "expected a number of target 'bikers', got '12'"),
        (False, "expected a number of target 'bikers', got false"),
    ],
)  # fmt: skip
def test_numeric_labels_must_be_finite_numbers(bad: object, msg: str) -> None:
    schema = LabelSchema.from_mlflow(Schema([ColSpec("double")]), BIKERS)
    [error] = errors_of_labels(schema, [{"request_id": "r1", "label": bad}])
    assert error["loc"] == ["labels", 0, "label"] and str(error["msg"]).startswith(msg)
    assert [x.label for x in schema.validate([{"request_id": "r1", "label": 651}])] == [651.0]


def test_a_regression_label_beyond_the_contract_range_is_drift_not_an_error() -> None:
    schema = LabelSchema.from_mlflow(Schema([ColSpec("double")]), BIKERS)
    # The range is a soft rule of the contract (a drift retrain widens it): shown, not enforced.
    assert schema.describe()["contract_range"] == [-324.0, 976.0]
    assert [x.label for x in schema.validate([{"request_id": "r1", "label": 1500}])] == [1500.0]


@pytest.mark.parametrize("kind", [None, ColSpec("double")])
def test_without_a_rule_huge_or_non_finite_numbers_are_still_refused(kind: object) -> None:
    schema = LabelSchema.from_mlflow(Schema([kind]) if kind else None)
    for bad in (2**64, -(2**64), float("nan"), float("inf"), {"a": 1}):
        [error] = errors_of_labels(schema, [{"request_id": "r1", "label": bad}])
        assert error["loc"] == ["labels", 0, "label"]
    assert schema.validate([{"request_id": "r1", "label": 2**53}])[0].label == 2**53


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


# -- the columnar fast path agrees with the pydantic path ------------------------------------
# Values of every JSON type a body can carry, including the awkward ones: bools where numbers
# are expected, non-finite floats, integers beyond float range, nested values.
_json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_ids = st.one_of(
    st.text(max_size=8), st.integers(), st.none(), st.just("x" * 300), st.just("ok-id\n")
)


@st.composite
def _record(draw: st.DrawFn, noise: int) -> object:
    """One record; `noise` (0-10) is how likely each part is to be something unexpected."""

    def odd() -> bool:
        return draw(st.integers(0, 99)) < noise * 3

    if odd() and odd():
        return draw(_json_values)  # not an object at all
    typical = {
        "temp": st.floats(-1e6, 1e6) | st.integers(-100, 100),
        "hr": st.integers(0, 23),
        "weathersit": st.text(max_size=6),
        "holiday": st.booleans(),
        "hum": st.floats(0, 1) | st.none(),
    }
    record = {}
    for name, values in typical.items():
        if odd() and odd():
            continue  # missing (hum is optional)
        record[name] = draw(_json_values if odd() else values)
    if odd() and odd():
        record["unknown"] = 1
    for key in ("request_id", "entity_id"):
        if draw(st.booleans()):
            record[key] = draw(_ids if odd() else st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True))
    return record


@st.composite
def _records(draw: st.DrawFn) -> list[object]:
    noise = draw(st.integers(0, 10))
    return draw(st.lists(_record(noise), min_size=1, max_size=6))


def _slow(schema: RecordSchema, records: list[object]) -> object:
    try:
        return ValidBatch.from_records(schema._validate_records(records, "records"), schema.names)
    except SchemaError:
        return "refused"


@given(_records())
@settings(max_examples=500, deadline=None)
def test_fast_path_accepts_exactly_what_pydantic_accepts_with_the_same_values(
    records: list[object],
) -> None:
    schema = bikeshare_like()  # not the fixture: hypothesis calls this test many times
    slow = _slow(schema, records)
    fast = schema._validate_columns(records)
    if fast is None:  # not vouched for: the request takes the pydantic path, whatever it says
        return
    assert slow != "refused", f"fast path accepted what pydantic refuses: {records!r}"
    assert isinstance(slow, ValidBatch)
    assert fast.entity_ids == slow.entity_ids
    given_ids = [r.get("request_id") for r in records if isinstance(r, dict)]
    for got, want, explicit in zip(fast.request_ids, slow.request_ids, given_ids, strict=True):
        assert got == want if explicit else len(got) == 32
    for name in schema.names:
        a, b = fast.columns[name], slow.columns[name]
        assert [type(v) for v in a] == [type(v) for v in b], name
        assert a == b, name
    fast_input, slow_input = _model_input(schema, fast), _model_input(schema, slow)
    if isinstance(fast_input, pd.DataFrame) and isinstance(slow_input, pd.DataFrame):
        pd.testing.assert_frame_equal(fast_input, slow_input)
    else:
        assert fast_input == slow_input


def _model_input(schema: RecordSchema, batch: ValidBatch) -> object:
    try:
        return schema.frame_of_batches([batch])
    except (OverflowError, ValueError) as exc:  # e.g. an integer beyond int64
        return type(exc)


def test_well_formed_requests_take_the_fast_path(schema: RecordSchema) -> None:
    records = [good(hum=0.5), good(temp=1, hum=None, request_id="r-1", entity_id="u-9")]
    fast = schema._validate_columns(records)
    assert fast is not None
    assert fast.columns["temp"] == [0.3, 1.0] and type(fast.columns["temp"][1]) is float
    assert fast.request_ids[1] == "r-1" and fast.entity_ids == [None, "u-9"]


# -- hostile input: bounded work, ranges the model and the log can hold ----------------------


def test_validation_stops_after_the_error_cap_and_says_so(schema: RecordSchema) -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(SchemaError) as info:
        schema.validate_batch([{}] * 300_000)  # every record misses 4 features
    elapsed = time.perf_counter() - started
    assert len(info.value.errors) == 20 and not info.value.complete
    assert info.value.body()["summary"].startswith("first 20 of >=21 errors")
    assert elapsed < 2.0, f"{elapsed:.1f} s: validation did not stop at the cap"
    one = errors_of(schema, [good(temp="x")])
    assert len(one) == 1


def test_a_complete_error_list_has_no_summary(schema: RecordSchema) -> None:
    with pytest.raises(SchemaError) as info:
        schema.validate_batch([good(temp="x"), good(hr="y")])
    assert info.value.complete and info.value.body() == {"detail": info.value.errors}


@pytest.mark.parametrize(
    ("records", "loc", "words"),
    [
        ([good(request_id="a"), good(), good(request_id="a")], 2, "also records[0]"),
        ([good(request_id=7), good(request_id="7")], 1, "duplicate request_id '7'"),
    ],
)
def test_duplicate_request_ids_in_one_request_are_refused(
    schema: RecordSchema, records: list[object], loc: int, words: str
) -> None:
    [error] = errors_of(schema, records)
    assert error["loc"] == ["records", loc, "request_id"] and words in error["msg"]
    assert error["type"] == "duplicate_id"


@pytest.mark.parametrize(
    ("value", "ok"),
    [(2**63 - 1, True), (-(2**63), True), (2**63, False), (2**64, False), (-(2**63) - 1, False)],
)
def test_long_features_must_fit_int64(schema: RecordSchema, value: int, ok: bool) -> None:
    if ok:
        assert schema.validate_batch([good(hr=value)]).columns["hr"] == [value]
        return
    [error] = errors_of(schema, [good(hr=value)])
    assert error["loc"] == ["records", 0, "hr"]
    assert error["msg"].startswith("expected an integer between -9223372036854775808 and")


def test_integer_features_must_fit_int32() -> None:
    schema = RecordSchema.from_mlflow(Schema([ColSpec("integer", "n")]))
    assert schema.validate_batch([{"n": 2**31 - 1}]).columns["n"] == [2**31 - 1]
    [error] = errors_of(schema, [{"n": 2**31}])
    assert "between -2147483648 and 2147483647" in error["msg"]


@pytest.mark.parametrize(("value", "ok"), [(2**64, True), (10**400, True), (7, True)])
def test_huge_integers_for_double_features_become_floats_or_are_refused(
    schema: RecordSchema, value: int, ok: bool
) -> None:
    try:
        batch = schema.validate_batch([good(temp=value)])
    except SchemaError as exc:
        assert exc.errors[0]["loc"] == ["records", 0, "temp"]
        return
    assert batch.columns["temp"] == [float(value)]


def test_unchecked_records_refuse_integers_the_log_cannot_write() -> None:
    schema = RecordSchema.from_mlflow(None)
    assert schema.validate_batch([{"a": 2**64 - 1, "b": [-(2**63)]}])
    [error] = errors_of(schema, [{"a": 1, "b": {"c": [2**64]}}])
    assert error["loc"] == ["records", 0, "b", "c", 0] and "64 bits" in error["msg"]


def _outcome(run: object) -> object:
    """What a validation gives: the refusal's errors, or the batch (ids drawn fresh each
    time, so only their number)."""
    try:
        batch = run()  # type: ignore[operator]
    except SchemaError as exc:
        return ("refused", exc.errors)
    return (len(batch.request_ids), batch.entity_ids, batch.columns)


@given(
    st.lists(_records(), min_size=1, max_size=4).map(lambda parts: [r for p in parts for r in p])
)
@settings(max_examples=200, deadline=None)
def test_validation_in_steps_gives_what_one_go_gives(records: list[object]) -> None:
    """The stepwise validation large bodies take (a step per event-loop turn) accepts,
    refuses and builds exactly what `validate_batch` does."""
    schema = bikeshare_like()
    whole = _outcome(lambda: schema.validate_batch(records))
    steps = schema.validate_batch_steps(records, step=2)
    taken = 0

    def drive() -> object:
        nonlocal taken
        while True:
            try:
                next(steps)
                taken += 1
            except StopIteration as done:
                return done.value

    assert _outcome(drive) == whole
    if len(records) > 4 and whole[0] == "refused":
        assert taken > 0  # the slow path did yield between records


@pytest.mark.parametrize("n", [1, 100, 4096, 4097, 5000])
def test_new_request_ids_are_32_hex_digits_unique_and_numbered_in_order(n: int) -> None:
    ids = new_request_ids(n)
    assert len(ids) == n == len(set(ids))
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    base = ids[0][:24]
    assert ids == [f"{base}{i:08x}" for i in range(n)]
    assert new_request_ids(n)[0][:24] != base  # a fresh random draw per call


def test_new_request_ids_are_time_ordered_across_requests() -> None:
    """The log's request_id index grows at its right edge: ids of later requests sort
    after earlier ones (their first 12 digits are the millisecond they were made)."""
    before = time.time_ns() // 1_000_000
    first = new_request_ids(3)
    time.sleep(0.002)
    second = new_request_ids(3)
    after = time.time_ns() // 1_000_000
    assert before <= int(first[0][:12], 16) < int(second[0][:12], 16) <= after
    assert max(first) < min(second)
