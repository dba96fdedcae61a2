"""Input and label schemas built from a model's MLflow signature.

Each record of a request is validated against a pydantic model generated from
the signature's columns (strict types, unknown columns refused), and every
problem becomes one entry of a 422 body that names the field, the value and
what was expected::

    {"loc": ["records", 0, "temp"], "msg": "expected a number, got 'hot'",
     "input": "hot", "type": "float_type"}

Two reserved keys may accompany the features of a record: ``request_id`` (the
caller's id for the prediction; generated when absent) and ``entity_id`` (the
key that makes canary routing sticky, e.g. a customer or a station).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

REQUEST_ID = "request_id"
ENTITY_ID = "entity_id"
RESERVED_KEYS = (REQUEST_ID, ENTITY_ID)
MAX_ID_CHARS = 128
MAX_ERRORS = 20  # validation stops after this many problems; a 422 body lists them
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
_JSON_INTS = (-(2**63), 2**64 - 1)  # what the prediction log's JSON encoder can write
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-/]{1,128}")

Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict(), Field(ge=INT64[0], le=INT64[1])]
Integer32 = Annotated[int, Strict(), Field(ge=INT32[0], le=INT32[1])]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]


@dataclass(frozen=True)
class ColumnKind:
    """How one MLflow column type is checked, described and handed to the model."""

    python: Any
    expected: str  # words for error messages: "a number", "an integer" ...
    dtype: str | None  # pandas dtype of the column given to the model
    # Exact Python types a JSON value of this kind arrives as, for the columnar fast path
    # (None: always checked by pydantic). bool is not int here: `type(True) is bool`.
    accepts: frozenset[type] | None = None
    bounds: tuple[int, int] | None = None  # integers: the range the dtype holds


_NUMBER_TYPES = frozenset({float, int})
_KINDS: dict[str, ColumnKind] = {
    "double": ColumnKind(Number, "a number", "float64", _NUMBER_TYPES),
    "float": ColumnKind(Number, "a number", "float32", _NUMBER_TYPES),
    "long": ColumnKind(Integer, "an integer", "int64", frozenset({int}), INT64),
    "integer": ColumnKind(Integer32, "an integer", "int32", frozenset({int}), INT32),
    "boolean": ColumnKind(Flag, "true or false", "bool", frozenset({bool})),
    "string": ColumnKind(Text, "a string", None, frozenset({str})),
    "binary": ColumnKind(Text, "a string", None, frozenset({str})),
    "datetime": ColumnKind(datetime, "an ISO 8601 date-time", "datetime64[ns]"),
}
_ANY = ColumnKind(Any, "any JSON value", None)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow type name: double, long, string ...
    required: bool = True

    @property
    def kind(self) -> ColumnKind:
        return _KINDS.get(self.type, _ANY)


class SchemaError(ValueError):
    """A request that does not match the schema; `errors` is the 422 `detail` list.

    `complete` is False when validation stopped at MAX_ERRORS problems (there may be more).
    """

    def __init__(self, errors: list[dict[str, Any]], complete: bool = True) -> None:
        super().__init__(f"{len(errors)} invalid field(s): " + "; ".join(e["msg"] for e in errors))
        self.errors = errors[:MAX_ERRORS]
        self.complete = complete and len(errors) <= MAX_ERRORS

    def body(self) -> dict[str, Any]:
        """The 422 body: `detail`, plus a `summary` when the list is cut short."""
        if self.complete:
            return {"detail": self.errors}
        shown = len(self.errors)
        return {
            "detail": self.errors,
            "summary": f"first {shown} of >={shown + 1} errors: validation stops after "
            f"{MAX_ERRORS}; fix these and resend",
        }


@dataclass(frozen=True)
class ValidRecord:
    """One validated record: the ids and the features in schema order."""

    request_id: str
    entity_id: str | None
    features: dict[str, Any]

    @property
    def routing_key(self) -> str:
        """Entity key wins over the request id, so one entity always sees one model."""
        return self.entity_id if self.entity_id is not None else self.request_id


@dataclass(frozen=True, eq=False)
class ValidBatch:
    """One request's validated records, held column by column.

    The model gets columns and the log gets one features dict per record, so a
    100-record request costs a handful of list operations rather than 100 objects.
    ``columns`` is in schema order (checked schemas); an unchecked schema keeps each
    record's features as received in ``rows``.
    """

    request_ids: list[str]
    entity_ids: list[str | None]
    columns: dict[str, list[Any]]
    rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.request_ids)

    def features(self) -> list[dict[str, Any]]:
        """One features dict per record (schema order), as the log stores them."""
        if self.rows is not None:
            return self.rows
        if not self.columns:
            return [{} for _ in self.request_ids]
        names = list(self.columns)
        rows = zip(*self.columns.values(), strict=True)
        return [dict(zip(names, values, strict=True)) for values in rows]

    def feature_values(self) -> tuple[tuple[str, ...], list[tuple[Any, ...]]] | None:
        """(names, one tuple of values per record) in schema order, for the log without a
        dict per record (`predlog.log.RowBlock`); None for unchecked records (`features`)."""
        if self.rows is not None or not self.columns:
            return None
        return tuple(self.columns), list(zip(*self.columns.values(), strict=True))

    def take(self, indices: Sequence[int]) -> ValidBatch:
        """The records at `indices` (e.g. the ones the canary sends to the challenger)."""
        return ValidBatch(
            [self.request_ids[i] for i in indices],
            [self.entity_ids[i] for i in indices],
            {name: [values[i] for i in indices] for name, values in self.columns.items()},
            None if self.rows is None else [self.rows[i] for i in indices],
        )

    def routing_keys(self) -> list[str]:
        """Entity id, else request id, per record (see `ValidRecord.routing_key`)."""
        return [
            entity if entity is not None else request
            for request, entity in zip(self.request_ids, self.entity_ids, strict=True)
        ]

    def records(self) -> list[ValidRecord]:
        return [
            ValidRecord(request_id, entity_id, features)
            for request_id, entity_id, features in zip(
                self.request_ids, self.entity_ids, self.features(), strict=True
            )
        ]

    @classmethod
    def from_records(cls, records: Sequence[ValidRecord], names: Sequence[str]) -> ValidBatch:
        """The columnar form of records validated one by one."""
        columns = {name: [r.features.get(name) for r in records] for name in names}
        rows = None if names else [r.features for r in records]
        return cls([r.request_id for r in records], [r.entity_id for r in records], columns, rows)


T = TypeVar("T")
Steps = Generator[None, None, T]
VALIDATION_STEP_RECORDS = 16  # records the slow path checks per step (well under 1 ms idle)


def run_steps(steps: Steps[T]) -> T:
    """Drive a stepwise computation to its end in one go."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


_ID_SUFFIXES = [f"{i:08x}" for i in range(4096)]  # 0.2 MB; a third of the cost per id


def new_request_ids(n: int) -> list[str]:
    """n fresh ids of 32 hex digits, time-ordered: the milliseconds since the epoch (12
    digits, as in a UUIDv7), 12 random digits drawn once per request, then the record's
    number in the request (8 digits).

    Time order keeps the prediction log's `request_id` index growing at its right edge.
    With random ids (`uuid4().hex`) each request's rows went into the middle of a leaf
    page of that index and split it: 16-29 % more bytes written per row and 3-14 % more
    of the writer's CPU (`python -m bench.serving.request_ids`), 6-14 % more CPU per
    100-record request in a serving process (`python -m bench.serving.cpu_ab`; bench/
    README.md, session 19). Unique across processes: 48 random bits per request within
    the same millisecond.
    """
    base = f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"
    if n <= len(_ID_SUFFIXES):
        return list(map(base.__add__, _ID_SUFFIXES[:n]))
    return [f"{base}{i:08x}" for i in range(n)]


@dataclass(frozen=True)
class Label:
    request_id: str
    label: Any


@dataclass
class RecordSchema:
    """Validate request records against a model signature and build model input."""

    columns: tuple[Column, ...]
    checked: bool = True  # False when the model has no column signature
    _model: type[BaseModel] | None = field(default=None, init=False, repr=False)
    _fast_ok: bool | None = field(default=None, init=False, repr=False)
    _name_set: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    @classmethod
    def from_mlflow(cls, schema: Any | None) -> RecordSchema:
        """From `pyfunc.metadata.get_input_schema()`; None or tensors → unchecked records."""
        if schema is None or not getattr(schema, "inputs", None) or not schema.has_input_names():
            return cls(columns=(), checked=False)
        if getattr(schema, "is_tensor_spec", lambda: False)():
            return cls(columns=(), checked=False)
        columns = tuple(
            Column(name=str(spec.name), type=_type_name(spec.type), required=spec.required)
            for spec in schema.inputs
        )
        return cls(columns=columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def describe(self) -> list[dict[str, Any]]:
        """The schema as /metadata shows it."""
        return [
            {"name": c.name, "type": c.type, "required": c.required, "expected": c.kind.expected}
            for c in self.columns
        ]

    def pydantic_model(self) -> type[BaseModel]:
        """The generated record model (strict types, unknown columns forbidden)."""
        if self._model is None:
            fields: dict[str, Any] = {}
            for c in self.columns:
                kind = c.kind.python
                fields[c.name] = (kind, ...) if c.required else (kind | None, None)
            config = ConfigDict(extra="forbid" if self.checked else "allow")
            self._model = create_model("Record", __config__=config, **fields)
        return self._model

    def validate(self, records: Any, loc: str = "records") -> list[ValidRecord]:
        """Check a request's records; raise SchemaError listing every problem found."""
        return self.validate_batch(records, loc).records()

    def validate_batch(self, records: Any, loc: str = "records") -> ValidBatch:
        """Check a request's records into a `ValidBatch`; SchemaError lists every problem.

        Well-formed requests take a columnar fast path (one type check per column);
        anything it does not vouch for goes through the pydantic model record by record,
        which also writes the error messages, so both paths accept and refuse the same.
        """
        return run_steps(self.validate_batch_steps(records, loc, step=0))

    def validate_batch_steps(
        self, records: Any, loc: str = "records", step: int = VALIDATION_STEP_RECORDS
    ) -> Steps[ValidBatch]:
        """`validate_batch` as a generator that yields between pieces of work (a column
        of the fast path, `step` records of the slow one; 0: never), so an event loop can
        drive a large body a piece per turn (`run_steps_async`) and keep answering."""
        if isinstance(records, list) and records and self.checked:
            fast = yield from self._validate_columns_steps(records, yielding=step > 0)
            if fast is not None:
                return fast
        valid = yield from self._validate_records_steps(records, loc, step)
        return ValidBatch.from_records(valid, self.names)

    def _validate_columns(self, records: list[Any]) -> ValidBatch | None:
        """The fast path, or None when a record needs the slow path (to pass or to fail)."""
        return run_steps(self._validate_columns_steps(records, yielding=False))

    def _validate_columns_steps(
        self, records: list[Any], yielding: bool
    ) -> Steps[ValidBatch | None]:
        """`_validate_columns`, yielding before each column when `yielding`."""
        if not self._fast_path_applies():
            return None
        expected = self._name_set
        with_ids = False
        for raw in records:
            if type(raw) is not dict:
                return None
            keys = raw.keys()
            if keys != expected:
                if keys - RESERVED_KEYS != expected:
                    return None
                with_ids = True
        columns: dict[str, list[Any]] = {}
        for column in self.columns:
            if yielding:
                yield
            name = column.name
            values = [raw[name] for raw in records]
            kind = column.kind
            accepts = kind.accepts
            assert accepts is not None
            types = set(map(type, values))
            nulls = not column.required and type(None) in types
            if nulls:
                types.discard(type(None))
            if not types <= accepts:
                return None
            if kind.bounds is not None and values:
                present = [v for v in values if v is not None] if nulls else values
                low, high = kind.bounds
                if present and not (low <= min(present) and max(present) <= high):
                    return None
            if accepts is _NUMBER_TYPES:
                # C-level maps when the column holds no nulls (the common case)
                if int in types:  # pydantic hands strict ints to a float field as floats
                    try:
                        values = (
                            [v if v is None else float(v) for v in values]
                            if nulls
                            else list(map(float, values))
                        )
                    except OverflowError:
                        return None
                if nulls:
                    if not all(v is None or math.isfinite(v) for v in values):
                        return None
                elif not all(map(math.isfinite, values)):
                    return None
            columns[name] = values
        n = len(records)
        if not with_ids:
            return ValidBatch(new_request_ids(n), [None] * n, columns)
        errors: list[dict[str, Any]] = []
        generated = new_request_ids(n)
        request_ids = []
        entity_ids = []
        for i, raw in enumerate(records):
            request_id = _check_id(raw.get(REQUEST_ID), [], errors)
            entity_ids.append(_check_id(raw.get(ENTITY_ID), [], errors))
            request_ids.append(request_id or generated[i])
        if errors or _has_duplicates(request_ids):
            return None  # the slow path names the record and the field
        return ValidBatch(request_ids, entity_ids, columns)

    def _fast_path_applies(self) -> bool:
        """Whether every column's kind has a columnar check (datetimes have none)."""
        if self._fast_ok is None:
            self._name_set = frozenset(self.names)
            self._fast_ok = all(c.kind.accepts is not None for c in self.columns)
        return self._fast_ok

    def _validate_records(self, records: Any, loc: str) -> list[ValidRecord]:
        """Record by record through the pydantic model (the reference behaviour)."""
        return run_steps(self._validate_records_steps(records, loc, 0))

    def _validate_records_steps(
        self, records: Any, loc: str, step: int
    ) -> Steps[list[ValidRecord]]:
        """`_validate_records`, yielding every `step` records (0: never)."""
        if not isinstance(records, list):
            raise _refusal_of(
                [loc],
                records,
                "list_type",
                f"expected a list of records, got {_show(records)}",
            )
        if not records:
            raise _refusal_of(
                [loc],
                records,
                "too_short",
                "expected at least one record, got an empty list",
            )
        model = self.pydantic_model()
        generated = new_request_ids(len(records))  # one draw per request, as the fast path
        valid: list[ValidRecord] = []
        errors: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(records):
            if step and i and i % step == 0:
                yield
            if len(errors) >= MAX_ERRORS:  # bounded work for a body full of mistakes
                raise SchemaError(errors, complete=False)
            if not isinstance(raw, dict):
                errors.append(
                    _error(
                        [loc, i],
                        raw,
                        "dict_type",
                        f"expected an object of feature values, got {_show(raw)}",
                    )
                )
                continue
            features = {k: v for k, v in raw.items() if k not in RESERVED_KEYS}
            request_id = _check_id(raw.get(REQUEST_ID), [loc, i, REQUEST_ID], errors)
            if request_id is not None and (first := seen.setdefault(request_id, i)) != i:
                errors.append(
                    _error(
                        [loc, i, REQUEST_ID],
                        request_id,
                        "duplicate_id",
                        f"duplicate request_id {request_id!r} (also records[{first}]): "
                        "ids must be unique within a request",
                    )
                )
            entity_id = _check_id(raw.get(ENTITY_ID), [loc, i, ENTITY_ID], errors)
            try:
                parsed = model.model_validate(features)
            except ValidationError as exc:
                errors.extend(self._explain(exc, [loc, i]))
                continue
            if not self.checked:
                errors.extend(_unwritable(features, [loc, i]))
            values = parsed.model_dump() if self.checked else features
            valid.append(ValidRecord(request_id or generated[i], entity_id, values))
        if errors:
            raise SchemaError(errors)
        return valid

    def frame(self, records: Sequence[ValidRecord]) -> pd.DataFrame:
        """Model input: one row per record, columns and dtypes as the signature says."""
        if not self.checked:
            return pd.DataFrame([r.features for r in records])
        return self.frame_of_columns(
            {c.name: [r.features.get(c.name) for r in records] for c in self.columns}
        )

    def frame_of_batches(self, batches: Sequence[ValidBatch]) -> pd.DataFrame:
        """Model input for whole validated requests, in order (one model call)."""
        if not self.checked:
            return pd.DataFrame([row for b in batches for row in b.features()])
        if len(batches) == 1:
            return self.frame_of_columns(batches[0].columns)
        return self.frame_of_columns(
            {c.name: [v for b in batches for v in b.columns[c.name]] for c in self.columns}
        )

    def frame_of_columns(self, columns: dict[str, list[Any]]) -> pd.DataFrame:
        """Model input from validated columns, dtypes as the signature says."""
        data: dict[str, Any] = {}
        for c in self.columns:
            values = columns[c.name]
            dtype = c.kind.dtype
            if dtype is None or (not c.required and any(v is None for v in values)):
                data[c.name] = pd.Series(values, dtype="object" if dtype is None else None)
            elif dtype.startswith("datetime"):
                data[c.name] = pd.to_datetime(values)
            else:
                data[c.name] = np.asarray(values, dtype=dtype)
        return pd.DataFrame(data)

    def _explain(self, exc: ValidationError, prefix: list[Any]) -> list[dict[str, Any]]:
        by_name = {c.name: c for c in self.columns}
        found = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else None
            column = by_name.get(name) if name is not None else None
            value = None if err["type"] == "missing" else err.get("input")
            found.append(
                _error(
                    [*prefix, *err["loc"]],
                    value,
                    err["type"],
                    _message(err["type"], name, column, err.get("input"), self.names),
                )
            )
        return found


def _has_duplicates(request_ids: list[str]) -> bool:
    return len(set(request_ids)) != len(request_ids)


def _unwritable(features: dict[str, Any], prefix: list[Any]) -> list[dict[str, Any]]:
    """Integers of unchecked records that the prediction log cannot store (beyond 64 bits)."""
    found = []
    stack: list[tuple[list[Any], Any]] = [([*prefix, k], v) for k, v in features.items()]
    while stack and len(found) < MAX_ERRORS:
        loc, value = stack.pop()
        if isinstance(value, int) and not _JSON_INTS[0] <= value <= _JSON_INTS[1]:
            found.append(
                _error(
                    loc,
                    value,
                    "int_range",
                    f"integer {_show(value)} does not fit 64 bits: send a float instead",
                )
            )
        elif isinstance(value, dict):
            stack.extend(([*loc, k], v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(([*loc, i], v) for i, v in enumerate(value))
    return found


def _type_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None)
    return str(name if name is not None else dtype).lower()


def _check_id(value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> str | None:
    """Ids are strings (or integers, kept as text) of letters, digits and `_.:-/`."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        errors.append(
            _error(
                loc,
                value,
                "id_format",
                f"expected an id of 1-{MAX_ID_CHARS} letters, digits or '_.:-/', "
                f"got {_show(value)}",
            )
        )
        return None
    return value


def _message(
    kind: str, name: str | None, column: Column | None, value: Any, names: list[str]
) -> str:
    expected = column.kind.expected if column else "a known feature"
    if kind == "missing":
        return f"missing feature {name!r} (expected {expected})"
    if kind == "extra_forbidden":
        return f"unknown feature {name!r}; the model expects: {', '.join(names)}"
    if kind == "finite_number":
        return f"expected a finite number, got {_show(value)}"
    if kind in ("greater_than_equal", "less_than_equal") and column and column.kind.bounds:
        low, high = column.kind.bounds
        return f"expected {expected} between {low} and {high}, got {_show(value)}"
    return f"expected {expected}, got {_show(value)}"


def _error(loc: list[Any], value: Any, kind: str, msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "input": _jsonable(value), "type": kind}


def _refusal_of(loc: list[Any], value: Any, kind: str, msg: str) -> SchemaError:
    """A whole body refused for one reason (not a list, an empty list)."""
    return SchemaError([_error(loc, value, kind, msg)])


def _show(value: Any) -> str:
    """A value as the caller wrote it: strings quoted, null/true/false in JSON words."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    text = json.dumps(_jsonable(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


# -- labels (POST /feedback) -------------------------------------------------------------


MAX_LABEL_MAGNITUDE = float(2**53)
"""Largest |numeric label| accepted when the model carries no range for its target: past
2**53 a float64 no longer holds every integer, and no count or measure gets near it."""

_LABEL_WORDS = {
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "any": "a string, number or true/false",
}
_FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]
_LABEL_TYPES: dict[str, Any] = {
    "number": _FiniteNumber,
    "string": Text,
    "boolean": Flag,
    "any": Flag
    | Annotated[_FiniteNumber, Field(ge=-MAX_LABEL_MAGNITUDE, le=MAX_LABEL_MAGNITUDE)]
    | Text,
}


@dataclass(frozen=True)
class LabelSchema:
    """What a ground-truth label must be: the hard rules of the target in the data contract.

    `kind` comes from the model's output signature (or the label rule logged with the
    model, ``data.contract.label_rule``), `classes` (classification) from that rule: a
    label the next retrain's contract would refuse outright (a wrong kind, an unknown
    class) is refused here, with the field, the value and what is allowed. A regression
    target's range is a soft rule of the contract (drift may widen it), so it is shown
    (`soft_range`) but not enforced; numbers must be finite and within
    ±MAX_LABEL_MAGNITUDE.
    """

    kind: str = "any"  # number | string | boolean | any
    classes: tuple[Any, ...] | None = None
    target: str | None = None
    soft_range: tuple[float | None, float | None] | None = None
    _adapter: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_mlflow(cls, schema: Any | None, rule: dict[str, Any] | None = None) -> LabelSchema:
        """From `pyfunc.metadata.get_output_schema()` (column or tensor signatures) and the
        label rule of the model's metadata, when it has one."""
        kind = cls._kind_of(schema)
        if not rule:
            return cls(kind)
        classes = rule.get("classes")
        if classes:
            kinds = {_value_kind(c) for c in classes}
            return cls(
                kinds.pop() if len(kinds) == 1 else "any",
                classes=tuple(classes),
                target=rule.get("target"),
            )
        if rule.get("kind") == "numeric" and rule.get("task") != "classification":
            low, high = _number_or_none(rule.get("min")), _number_or_none(rule.get("max"))
            return cls("number", target=rule.get("target"), soft_range=(low, high))
        return cls(kind, target=rule.get("target"))

    @staticmethod
    def _kind_of(schema: Any | None) -> str:
        if schema is None or not getattr(schema, "inputs", None):
            return "any"
        spec = schema.inputs[0]
        dtype = getattr(spec, "type", None)
        if dtype is None or getattr(schema, "is_tensor_spec", lambda: False)():
            np_type = getattr(spec, "type", None)
            name = str(getattr(np_type, "kind", "")) if np_type is not None else ""
            return {"f": "number", "i": "number", "u": "number", "b": "boolean"}.get(name, "any")
        name = _type_name(dtype)
        if name in ("double", "float", "long", "integer"):
            return "number"
        if name == "boolean":
            return "boolean"
        if name == "string":
            return "string"
        return "any"

    def describe(self) -> dict[str, Any]:
        """The label rule as /metadata shows it."""
        return {
            "kind": self.kind,
            "target": self.target,
            "classes": list(self.classes) if self.classes is not None else None,
            "contract_range": list(self.soft_range) if self.soft_range else None,
            "range_enforced": False,
        }

    def adapter(self) -> TypeAdapter[Any]:
        """The pydantic check of one label value (built once)."""
        if self._adapter is None:
            label_type = _LABEL_TYPES.get(self.kind, _LABEL_TYPES["any"])
            if self.classes is not None:
                label_type = Annotated[label_type, AfterValidator(self._one_of_classes)]
            elif self.kind == "number":
                bound = Field(ge=-MAX_LABEL_MAGNITUDE, le=MAX_LABEL_MAGNITUDE)
                label_type = Annotated[_FiniteNumber, bound]
            object.__setattr__(self, "_adapter", TypeAdapter(label_type))
        return self._adapter

    def _one_of_classes(self, value: Any) -> Any:
        for cls_value in self.classes or ():
            if _value_kind(cls_value) == _value_kind(value) and cls_value == value:
                return cls_value  # stored as the class is written (1.0 → 1)
        raise PydanticCustomError("literal_error", "not one of the classes")

    def validate(self, labels: Any, loc: str = "labels") -> list[Label]:
        if not isinstance(labels, list) or not labels:
            raise _refusal_of(
                [loc],
                labels,
                "list_type",
                "expected a non-empty list of {'request_id', 'label'} objects, "
                f"got {_show(labels)}",
            )
        valid: list[Label] = []
        errors: list[dict[str, Any]] = []
        for i, raw in enumerate(labels):
            label = self._label_of(raw, [loc, i], errors)
            if label is not None:
                valid.append(label)
            if len(errors) >= MAX_ERRORS:  # bounded work for a body full of mistakes
                break
        if errors:
            raise SchemaError(errors[:MAX_ERRORS])
        return valid

    def _label_of(self, raw: Any, at: list[Any], errors: list[dict[str, Any]]) -> Label | None:
        """One ``{request_id, label}`` object checked; what is wrong is added to `errors`."""
        if not isinstance(raw, dict):
            want = "expected an object with 'request_id' and 'label'"
            errors.append(_error(at, raw, "dict_type", f"{want}, got {_show(raw)}"))
            return None
        for key in sorted(set(raw) - {REQUEST_ID, "label"}):
            errors.append(
                _error(
                    [*at, key],
                    raw[key],
                    "extra_forbidden",
                    f"unknown field {key!r}; a label has 'request_id' and 'label'",
                )
            )
        if REQUEST_ID not in raw:
            errors.append(
                _error(
                    [*at, REQUEST_ID],
                    None,
                    "missing",
                    "missing field 'request_id' (the id the prediction answered with)",
                )
            )
        request_id = _check_id(raw.get(REQUEST_ID), [*at, REQUEST_ID], errors)
        if "label" not in raw:
            want = f"missing field 'label' (expected {self._expected()})"
            errors.append(_error([*at, "label"], None, "missing", want))
            return None
        try:
            value = self.adapter().validate_python(raw["label"])
        except ValidationError as exc:
            kind = exc.errors(include_url=False)[0]["type"]
            errors.append(_error([*at, "label"], raw["label"], kind, self._refusal(raw["label"])))
            return None
        return None if request_id is None else Label(request_id, value)

    def _refusal(self, value: Any) -> str:
        """Why `value` is not a label: the value, the target and what it allows."""
        target = f" of target {self.target!r}" if self.target else ""
        if self.classes is not None:
            allowed = ", ".join(_show(c) for c in self.classes)
            return f"label {_show(value)} is not a class{target}; allowed: {allowed}"
        if self.kind in ("number", "any") and _value_kind(value) == "number":
            if math.isfinite(value):
                return (
                    f"expected a number{target} between {-MAX_LABEL_MAGNITUDE:g} and "
                    f"{MAX_LABEL_MAGNITUDE:g}, got {_show(value)}"
                )
            return f"expected a finite number{target}, got {_show(value)}"
        return f"expected {self._expected()}{target}, got {_show(value)}"

    def _expected(self) -> str:
        return _LABEL_WORDS.get(self.kind, _LABEL_WORDS["any"])


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "any"


def _number_or_none(value: Any) -> float | None:
    return float(value) if _value_kind(value) == "number" else None


def jsonable_predictions(raw: Any, n: int) -> list[Any]:
    """Model output (array, Series, DataFrame, list) as one JSON value per record."""
    if isinstance(raw, pd.DataFrame):
        one = raw.shape[1] == 1
        values = raw.iloc[:, 0].tolist() if one else raw.to_dict(orient="records")
    elif isinstance(raw, pd.Series):
        values = raw.tolist()
    elif isinstance(raw, np.ndarray):
        wide = raw.ndim > 1 and raw.shape[-1] != 1  # e.g. class probabilities
        values = raw.reshape(len(raw), -1).tolist() if wide else raw.reshape(-1).tolist()
    else:
        values = list(raw)
    if len(values) != n:
        raise ValueError(f"the model returned {len(values)} predictions for {n} records")
    return [_plain(v) for v in values]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
