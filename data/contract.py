"""The data contract: what training and scoring data must look like, checked with GE.

A :class:`Contract` is derived from reference data (required columns and their kinds,
a label on every row, numeric ranges widened by a tolerance, the known categories)
and saved as readable JSON next to the model. :func:`validate` turns it into a Great
Expectations suite, runs it on a frame in an ephemeral context (no files, no
analytics, no progress bars) and reads the results by expectation type and column
into a :class:`ValidationReport` whose summary says what to fix.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from data.errors import DataError
from data.sources import dataset_digest

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation import Expectation

CONTRACT_FORMAT = 1
MAX_CATEGORIES = 50
"""Categorical columns with more distinct values than this get no allowed-value set."""
KINDS = ("numeric", "categorical", "datetime")
ROLES = ("feature", "target", "time")
EXAMPLES = 5

EXIST = "expect_column_to_exist"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
TYPE = "expect_column_values_to_be_in_type_list"
ROW_COUNT = "expect_table_row_count_to_be_between"

NUMERIC_TYPES = [
    *(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{sign}Int{bits}Dtype" for sign in ("", "U") for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
]
"""dtype names Great Expectations' pandas type check understands as numeric."""

_FIXES = {
    EXIST: "missing columns: add them to the data (names are case-sensitive)",
    TYPE: "wrong kinds: fix the values or the export so each column parses as the "
    "contract says; if a column changed meaning, rebuild the contract",
    NOT_NULL: "empty values: fill them or drop those rows",
    BETWEEN: "out-of-range values: check units and encodings; if the new range is real "
    "(drift), admit it with `driftloop contract widen --data FILE` (a drift-triggered "
    "retrain widens ranges by itself and records the diff)",
    IN_SET: "unseen categories: fix typos and encodings; if they are real, admit them with "
    "`driftloop contract widen --data FILE`",
    ROW_COUNT: "too few rows: add data or lower min_rows",
}


# -- the contract ----------------------------------------------------------------


@dataclass
class ColumnRule:
    """What one column must satisfy; ``why`` holds one line per expectation type."""

    name: str
    kind: str
    nullable: bool
    min: float | None = None
    max: float | None = None
    allowed: list[Any] | None = None
    role: str = "feature"
    why: dict[str, str] = field(default_factory=dict)


@dataclass
class Contract:
    """The columns, kinds, ranges and categories that data must have, plus a row minimum."""

    target: str
    time_column: str | None
    columns: list[ColumnRule]
    min_rows: int = 20
    created_from_digest: str = ""
    range_tolerance: float = 0.5
    revision: int = 1
    """1 when built from data; +1 each time `widen` admits legitimately drifted data."""

    def rule(self, name: str) -> ColumnRule:
        """The rule of column ``name``."""
        for rule in self.columns:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (with a format number for later migrations)."""
        return {"format": CONTRACT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "contract") -> Contract:
        """Rebuild a contract from :meth:`to_dict` output; DataError if it is not one."""
        try:
            fields = {k: v for k, v in raw.items() if k != "format"}
            columns = [ColumnRule(**c) for c in fields.pop("columns")]
            contract = cls(columns=columns, **fields)
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{source} is not a driftloop data contract ({exc}): rebuild it with "
                "build_contract(...).save(path)"
            ) from exc
        for rule in contract.columns:
            if rule.kind not in KINDS or rule.role not in ROLES:
                raise DataError(
                    f"{source}: column '{rule.name}' has kind '{rule.kind}' and role "
                    f"'{rule.role}'; kinds are {', '.join(KINDS)}, roles {', '.join(ROLES)}"
                )
        return contract

    def to_json(self) -> str:
        """Human-readable JSON: sorted keys, indent 2."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "contract") -> Contract:
        """Parse :meth:`to_json` output."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source} is not valid JSON ({exc}): rebuild it with build_contract(...).save"
            ) from exc
        if not isinstance(raw, dict):
            raise DataError(f"{source} is not a driftloop data contract (a JSON object)")
        return cls.from_dict(raw, source)

    def save(self, path: Path | str) -> Path:
        """Write the contract as JSON to ``path`` (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> Contract:
        """Read a contract written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"data contract {path} does not exist: build one from reference data with "
                "build_contract(...).save(path)"
            )
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


def _kind(values: pd.Series) -> str:
    if ptypes.is_bool_dtype(values):
        return "categorical"
    if ptypes.is_datetime64_any_dtype(values):
        return "datetime"
    if ptypes.is_numeric_dtype(values) and not ptypes.is_timedelta64_dtype(values):
        return "numeric"
    return "categorical"


def _plain(value: Any) -> Any:
    """A JSON-able Python value for numpy scalars, timestamps and NaN."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | np.datetime64):
        return str(value)
    return value


def _round(value: float) -> float:
    return float(f"{value:.12g}")


def _numeric_rule(rule: ColumnRule, values: pd.Series, tolerance: float) -> None:
    present = values.dropna()
    if present.empty:
        return
    low, high = float(present.min()), float(present.max())
    span = high - low
    pad = tolerance * (span if span > 0 else max(abs(low), 1.0))
    rule.min, rule.max = _round(low - pad), _round(high + pad)
    rule.why[BETWEEN] = (
        f"reference range {low:g}..{high:g} widened by {tolerance:.0%} of it on each side: "
        "values beyond it are likely unit or encoding errors, and models extrapolate badly"
    )


def _categorical_rule(rule: ColumnRule, values: pd.Series) -> None:
    categories = values.dropna().unique()
    if len(categories) > MAX_CATEGORIES:
        return
    rule.allowed = sorted((_plain(v) for v in categories), key=lambda v: (str(type(v)), str(v)))
    rule.why[IN_SET] = (
        f"the reference data has {len(categories)} categories; a category the model never "
        "saw has no learnt effect"
    )


def build_contract(
    reference: pd.DataFrame,
    target: str,
    time_column: str | None,
    range_tolerance: float = 0.5,
    min_rows: int = 20,
    digest: str = "",
) -> Contract:
    """Derive a contract from reference data (``digest`` defaults to the data's digest)."""
    for what, name in (("target column", target), ("time column", time_column)):
        if name is not None and name not in reference.columns:
            raise DataError(
                f"{what} '{name}' is not in the reference data; columns: "
                f"{', '.join(map(str, reference.columns))}"
            )
    if range_tolerance < 0:
        raise DataError(f"range_tolerance is {range_tolerance}: use 0 or more (e.g. 0.5)")
    rules = [
        _column_rule(str(column), reference[column], target, time_column, range_tolerance)
        for column in reference.columns
    ]
    return Contract(
        target=target,
        time_column=time_column,
        columns=rules,
        min_rows=min_rows,
        created_from_digest=digest or dataset_digest(reference),
        range_tolerance=range_tolerance,
    )


_WHY_EXIST = {
    "target": "the target is what the model learns to predict",
    "time": "the time column orders rows so the holdout is the latest data",
    "feature": "the model reads this feature: without it there is no prediction",
}
_WHY_NOT_NULL = {
    "target": "target must be present: rows without a label cannot train or score",
    "time": "rows without a time cannot be placed before or after the holdout",
    "feature": "the reference data had no empty values here: empties suggest a broken export",
}
_WHY_TYPE = {
    "numeric": "numeric in the reference data: text here means a parsing or export error",
    "categorical": "categorical in the reference data: numbers here mean codes replaced labels",
    "datetime": "dates in the reference data: parse the column as dates",
}


def _column_rule(
    name: str, values: pd.Series, target: str, time_column: str | None, range_tolerance: float
) -> ColumnRule:
    """The rule of one reference column, each check with why it is there."""
    role = "target" if name == target else ("time" if name == time_column else "feature")
    rule = ColumnRule(
        name=name,
        kind=_kind(values),
        nullable=role != "target" and bool(values.isna().any()),
        role=role,
    )
    rule.why[EXIST] = _WHY_EXIST[role]
    if not rule.nullable:
        rule.why[NOT_NULL] = _WHY_NOT_NULL[role]
    rule.why[TYPE] = _WHY_TYPE[rule.kind]
    if role != "time" and rule.kind == "numeric":
        _numeric_rule(rule, values, range_tolerance)
    elif role != "time" and rule.kind == "categorical":
        _categorical_rule(rule, values)
    return rule


LABEL_RULE_KEY = "driftloop_label"
"""Key of the label rule in an MLflow model's metadata (the MLmodel file)."""


def label_rule(contract: Contract, task: str, target_values: pd.Series) -> dict[str, Any]:
    """What a ground-truth label posted to the served model must be (JSON-able).

    The target's rule in the contract (its kind; for regression its range, a soft rule
    serving shows but does not enforce), and for classification the classes: the
    contract's category set (a hard rule for the target), else the classes trained on.
    Serving checks /feedback labels against it, so a label that would make a later
    retrain fail this contract outright is refused at the door instead.
    """
    rule = contract.rule(contract.target)
    classes: list[Any] | None = None
    if task == "classification":
        classes = rule.allowed
        if classes is None:
            present = target_values.dropna().unique()
            if len(present) <= MAX_CATEGORIES:
                classes = sorted((_plain(v) for v in present), key=lambda v: (str(type(v)), v))
    numeric = task != "classification" and rule.kind == "numeric"
    return {
        "target": rule.name,
        "task": task,
        "kind": rule.kind,
        "classes": classes,
        "min": rule.min if numeric else None,
        "max": rule.max if numeric else None,
    }


# -- Great Expectations ------------------------------------------------------------


def _expectation_specs(contract: Contract) -> list[tuple[str, str | None, dict[str, Any], str]]:
    """(expectation type, column, kwargs, why) for every check the contract makes."""
    specs: list[tuple[str, str | None, dict[str, Any], str]] = [
        (
            ROW_COUNT,
            None,
            {"min_value": contract.min_rows},
            f"fewer than {contract.min_rows} rows cannot train or score a model meaningfully",
        )
    ]
    for rule in contract.columns:
        column = rule.name
        specs.append((EXIST, column, {}, rule.why.get(EXIST, "")))
        if rule.kind == "numeric":
            specs.append((TYPE, column, {"type_list": NUMERIC_TYPES}, rule.why.get(TYPE, "")))
        if not rule.nullable:
            specs.append((NOT_NULL, column, {}, rule.why.get(NOT_NULL, "")))
        if rule.kind == "numeric" and rule.min is not None and rule.max is not None:
            bounds = {"min_value": rule.min, "max_value": rule.max}
            specs.append((BETWEEN, column, bounds, rule.why.get(BETWEEN, "")))
        if rule.kind == "categorical" and rule.allowed is not None:
            specs.append((IN_SET, column, {"value_set": rule.allowed}, rule.why.get(IN_SET, "")))
    return specs


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def _to_expectations(
    specs: list[tuple[str, str | None, dict[str, Any], str]],
) -> list[Expectation]:
    import great_expectations as gx

    expectations = []
    for expectation_type, column, kwargs, why in specs:
        cls = getattr(gx.expectations, _class_name(expectation_type))
        name = f"{expectation_type}:{column}" if column else expectation_type
        if column is not None:
            kwargs = {"column": column, **kwargs}
        expectations.append(cls(**kwargs, meta={"why": why, "name": name}, notes=why))
    return expectations


_SUMMARY = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_BOOLEAN_ONLY = {"result_format": "BOOLEAN_ONLY"}
_GX_LOCK = threading.Lock()
_GX_BATCHES: list[Any] = []  # this process's ephemeral context's batch definition, once built


def _run_great_expectations(
    df: pd.DataFrame, expectations: list[Expectation]
) -> dict[tuple[str, str | None], ExpectationValidationResult]:
    """Validate ``df`` in an ephemeral context; results keyed by (type, column).

    Two passes: every expectation with ``BOOLEAN_ONLY`` (passed or not: about 40 % of
    the metrics ``SUMMARY`` computes, i.e. of Great Expectations' per-metric work), then
    only the failed ones again with ``SUMMARY``, whose counts and examples the report
    shows. A frame that passes pays the first pass only; a failure reads the same result
    as a single ``SUMMARY`` pass would give.
    """
    import great_expectations as gx

    with _GX_LOCK:
        batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": df})

        def run(items: list[Expectation], result_format: dict[str, Any]) -> dict[Any, Any]:
            suite = gx.ExpectationSuite(name="driftloop-validation", expectations=items)
            result = batch.validate(suite, result_format=result_format)
            return {
                (r.expectation_config.type, r.expectation_config.kwargs.get("column")): r
                for r in result.results
            }

        results = run(expectations, _BOOLEAN_ONLY)
        failed = [e for e in expectations if not _passed(results.get(_gx_key(e)))]
        if failed:
            results.update(run(failed, _SUMMARY))
        return results


def _gx_key(expectation: Expectation) -> tuple[str, str | None]:
    return expectation.expectation_type, getattr(expectation, "column", None)


def _passed(result: ExpectationValidationResult | None) -> bool:
    return result is not None and bool(result.success)


def _gx_batch_definition() -> Any:
    """A whole-dataframe batch definition in an ephemeral context (no files, no
    analytics, no progress bars), built once per process: each validation gets its own
    batch of it (callers hold `_GX_LOCK`)."""
    if not _GX_BATCHES:
        os.environ["GX_ANALYTICS_ENABLED"] = "False"
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX_BATCHES.append(
            context.data_sources.add_pandas("driftloop")
            .add_dataframe_asset("frame")
            .add_batch_definition_whole_dataframe("whole")
        )
    return _GX_BATCHES[0]


# -- the report -------------------------------------------------------------------


@dataclass
class ExpectationFailure:
    """One failed check, in plain words, with up to five example values and rows."""

    expectation: str
    column: str | None
    message: str
    examples: list[Any] = field(default_factory=list)
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    example_rows: list[Any] = field(default_factory=list)
    why: str = ""
    soft: bool = False
    """A range or category rule: legitimate drift may break it (`widen` can admit it)."""
    origins: dict[str, int] = field(default_factory=dict)
    """Offending rows per source (the file, the live window) when the data has several."""

    def line(self) -> str:
        """``column 'temp': 12 values (0.14%) outside [...], e.g. 7.3 (expect_...)``."""
        where = f"column '{self.column}'" if self.column is not None else "table"
        came = ""
        if self.origins:
            came = "; from " + ", ".join(f"{src}: {n}" for src, n in self.origins.items())
        return f"{where}: {self.message}{came} ({self.expectation})"


@dataclass
class ValidationReport:
    """The verdict of a contract on one frame."""

    success: bool
    failures: list[ExpectationFailure]
    evaluated: int
    statistics: dict[str, Any]
    source: str = ""

    @property
    def hard_failures(self) -> list[ExpectationFailure]:
        """Failures no drift explains: missing columns, wrong kinds, empties, classes."""
        return [f for f in self.failures if not f.soft]

    @property
    def soft_failures(self) -> list[ExpectationFailure]:
        """Range and category failures: `widen` can admit them when the drift is real."""
        return [f for f in self.failures if f.soft]

    def failure(self, column: str | None, expectation: str | None = None) -> ExpectationFailure:
        """The failure of ``column`` (and ``expectation`` type, if given)."""
        for item in self.failures:
            if item.column == column and expectation in (None, item.expectation):
                return item
        raise KeyError((column, expectation))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, logged to MLflow as ``validation.json``."""
        return {
            "success": self.success,
            "source": self.source,
            "evaluated": self.evaluated,
            "statistics": {k: _plain(v) for k, v in self.statistics.items()},
            "failures": [
                {
                    **asdict(f),
                    "examples": [_plain(v) for v in f.examples],
                    "example_rows": [_plain(v) for v in f.example_rows],
                }
                for f in self.failures
            ],
        }

    def summary(self) -> str:
        """One header line, one line per failure, then what to do about each kind."""
        where = f" for {self.source}" if self.source else ""
        rows = self.statistics.get("rows", 0)
        digest = self.statistics.get("contract_digest") or "?"
        if self.success:
            return (
                f"data contract passed{where}: {self.evaluated} checks on {rows:,} rows "
                f"(contract from data {digest})"
            )
        lines = [
            f"data contract failed{where}: {len(self.failures)} of {self.evaluated} checks "
            f"failed on {rows:,} rows (contract from data {digest})"
        ]
        lines += [f"  {f.line()}" for f in self.failures]
        kinds = list(dict.fromkeys(f.expectation for f in self.failures))
        lines += ["what to do:"] + [f"  - {_FIXES[k]}" for k in kinds if k in _FIXES]
        return "\n".join(lines)


class ContractViolation(DataError):
    """Data broke its contract; ``.report`` holds the details, the message the summary."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    if 0 < value < 0.01:
        return " (<0.01%)"
    return f" ({value:.0f}%)" if value >= 10 else f" ({value:.2g}%)"


def _show(value: Any) -> str:
    value = _plain(value)
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _eg(examples: list[Any]) -> str:
    return f", e.g. {', '.join(_show(v) for v in examples)}" if examples else ""


def _distinct(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
            if len(seen) == EXAMPLES:
                break
    return seen


def _values(count: int | None) -> str:
    return "1 value" if count == 1 else f"{count} values"


def _kind_failure(rule: ColumnRule, values: pd.Series) -> ExpectationFailure | None:
    """Our own kind check, run before GE because it can say what went wrong."""
    present = values.dropna()
    actual = _kind(values)
    if present.empty or actual == rule.kind:
        return None
    count = percent = None
    examples: list[Any] = []
    rows: list[Any] = []
    if rule.kind == "numeric" and actual == "categorical":
        if ptypes.is_bool_dtype(values):
            message = "holds booleans where the reference data had numbers"
        else:
            as_numbers = pd.to_numeric(present, errors="coerce")
            bad = present[as_numbers.isna()]
            if bad.empty:
                message = (
                    f"holds numbers stored as text (dtype {values.dtype}): convert them "
                    "(pd.to_numeric) or fix the export"
                )
            else:
                count, percent = len(bad), 100.0 * len(bad) / len(values)
                examples = _distinct(bad.head(1000).tolist())
                rows = bad.index[:EXAMPLES].tolist()
                message = f"should be numeric but {_values(count)}{_percent(percent)} are text"
    else:
        count, percent = len(present), 100.0 * len(present) / len(values)
        examples = _distinct(present.head(1000).tolist())
        known = ", ".join(_show(v) for v in (rule.allowed or [])[:3])
        expected = {
            "numeric": "numbers",
            "categorical": f"categories such as {known}" if known else "text categories",
            "datetime": "dates",
        }[rule.kind]
        held = {"numeric": "numbers", "categorical": "text", "datetime": "dates"}[actual]
        message = f"holds {held} (dtype {values.dtype}) where the reference had {expected}"
    return ExpectationFailure(
        expectation=TYPE,
        column=rule.name,
        message=message + _eg(examples),
        examples=examples,
        unexpected_count=count,
        unexpected_percent=percent,
        example_rows=rows,
        why=rule.why.get(TYPE, ""),
    )


def _message(
    expectation_type: str, kwargs: dict[str, Any], result: dict[str, Any], examples: list[Any]
) -> str:
    count = result.get("unexpected_count")
    percent = _percent(result.get("unexpected_percent"))
    if expectation_type == EXIST:
        return "is missing: the contract requires it"
    if expectation_type == ROW_COUNT:
        return f"only {result.get('observed_value')} rows: the contract needs at least " + str(
            kwargs.get("min_value")
        )
    if expectation_type == NOT_NULL:
        rows = result.get("partial_unexpected_index_list") or []
        label = "row" if len(rows) == 1 else "rows"
        where = f", e.g. {label} {', '.join(map(str, rows[:EXAMPLES]))}" if rows else ""
        return f"{count} empty {'value' if count == 1 else 'values'}{percent}{where}"
    if expectation_type == BETWEEN:
        bounds = f"[{kwargs['min_value']:g}, {kwargs['max_value']:g}]"
        return f"{_values(count)}{percent} outside {bounds}{_eg(examples)}"
    if expectation_type == IN_SET:
        known = kwargs.get("value_set") or []
        shown = ", ".join(_show(v) for v in known[:8]) + (", …" if len(known) > 8 else "")
        seen = f"{_values(count)}{percent} not seen in the reference data"
        return f"{seen}{_eg(examples)}; known: {shown}"
    if expectation_type == TYPE:
        return f"has dtype {result.get('observed_value')}, expected a numeric dtype"
    return f"{_values(count)}{percent} unexpected{_eg(examples)}"


def _failure_from_result(
    expectation_type: str,
    column: str | None,
    kwargs: dict[str, Any],
    why: str,
    result: ExpectationValidationResult,
) -> ExpectationFailure | None:
    if result.success:
        return None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return ExpectationFailure(
            expectation=expectation_type,
            column=column,
            message=f"could not be checked: {info.get('exception_message')}",
            why=why,
        )
    details = dict(result.result or {})
    examples = (
        []
        if expectation_type == NOT_NULL
        else _distinct(details.get("partial_unexpected_list") or [])
    )
    return ExpectationFailure(
        expectation=expectation_type,
        column=column,
        message=_message(expectation_type, kwargs, details, examples),
        examples=examples,
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        example_rows=list(details.get("partial_unexpected_index_list") or [])[:EXAMPLES],
        why=why,
    )


def _kind_failures(
    df: pd.DataFrame, contract: Contract
) -> tuple[list[ExpectationFailure], set[str]]:
    """Columns of the wrong kind, checked before Great Expectations; and the columns
    (those, and missing ones) whose value checks would only repeat that failure."""
    failures: list[ExpectationFailure] = []
    skip: set[str] = set()
    for rule in contract.columns:
        if rule.name not in df.columns:
            skip.add(rule.name)
            continue
        kind_failure = _kind_failure(rule, df[rule.name])
        if kind_failure is not None:
            failures.append(kind_failure)
            skip.add(rule.name)
    return failures, skip


def _expectation_failures(
    df: pd.DataFrame,
    contract: Contract,
    specs: list[tuple[str, str | None, dict[str, Any], str]],
) -> list[ExpectationFailure]:
    """The failed expectations of `specs` on `df` (Great Expectations), in plain words; a
    missing column suggests the extra column it may have been renamed to."""
    results = _run_great_expectations(df, _to_expectations(specs))
    contract_columns = {rule.name for rule in contract.columns}
    failures = []
    for expectation_type, column, kwargs, why in specs:
        result = results.get((expectation_type, column))
        if result is None:
            raise RuntimeError(f"Great Expectations returned no result for {expectation_type}")
        failure = _failure_from_result(expectation_type, column, kwargs, why, result)
        if failure is not None and expectation_type == EXIST and column is not None:
            extra = [str(c) for c in df.columns if str(c) not in contract_columns]
            hint = difflib.get_close_matches(column, extra, n=1, cutoff=0.6)
            if hint:
                failure.message += f" (did you rename it to '{hint[0]}'?)"
        if failure is not None:
            failures.append(failure)
    return failures


def validate(
    df: pd.DataFrame,
    contract: Contract,
    *,
    source: str = "",
    provenance: pd.Series | None = None,
) -> ValidationReport:
    """Check ``df`` against ``contract``; ``source`` (a path) is named in the summary.

    ``provenance`` (aligned with ``df``'s index) names where each row came from, e.g.
    the training file or the live window a retrain appended; failures then count their
    offending rows per source.
    """
    started = time.perf_counter()
    failures, skip = _kind_failures(df, contract)
    specs = [
        spec
        for spec in _expectation_specs(contract)
        if spec[1] is None or spec[1] not in skip or spec[0] == EXIST
    ]
    failures += _expectation_failures(df, contract, specs)
    for failure in failures:
        failure.soft = _is_soft(failure, contract)
        if provenance is not None and provenance.nunique() > 1:
            failure.origins = _origins(failure, contract, df, provenance)
    order = {rule.name: i for i, rule in enumerate(contract.columns)}
    failures.sort(key=lambda f: -1 if f.column is None else order.get(f.column, len(order)))
    evaluated = len(specs) + sum(f.expectation == TYPE and f.column in skip for f in failures)
    skipped = len(_expectation_specs(contract)) - len(specs)
    statistics = {
        "evaluated": evaluated,
        "failed": len(failures),
        "skipped": skipped,
        "rows": len(df),
        "columns": df.shape[1],
        "extra_columns": [str(c) for c in df.columns if str(c) not in order],
        "contract_digest": contract.created_from_digest,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ValidationReport(
        success=not failures,
        failures=failures,
        evaluated=evaluated,
        statistics=statistics,
        source=source,
    )


def _is_soft(failure: ExpectationFailure, contract: Contract) -> bool:
    """Ranges and feature categories move with legitimate drift; the rest is hard."""
    if failure.expectation == BETWEEN:
        return True
    return failure.expectation == IN_SET and failure.column != contract.target


def _offending(rule: ColumnRule, expectation: str, values: pd.Series) -> pd.Series | None:
    """The rows that break ``expectation`` of ``rule`` (None: not a per-row rule)."""
    if expectation == NOT_NULL:
        return values.isna()
    if expectation == BETWEEN and rule.min is not None and rule.max is not None:
        numbers = pd.to_numeric(values, errors="coerce")
        return (numbers < rule.min) | (numbers > rule.max)
    if expectation == IN_SET and rule.allowed is not None:
        return values.notna() & ~values.isin(rule.allowed)
    return None


def _origins(
    failure: ExpectationFailure, contract: Contract, df: pd.DataFrame, provenance: pd.Series
) -> dict[str, int]:
    if failure.column is None or failure.column not in df.columns:
        return {}
    try:
        rule = contract.rule(failure.column)
    except KeyError:
        return {}
    mask = _offending(rule, failure.expectation, df[failure.column])
    if mask is None:
        return {}
    counts = provenance[mask.fillna(False).astype(bool)].value_counts(sort=False)
    return {str(src): int(counts.get(src, 0)) for src in dict.fromkeys(provenance.tolist())}


# -- contracts that follow legitimate drift -------------------------------------------


@dataclass
class RuleChange:
    """How one column's rule differs between two contracts."""

    column: str
    what: str  # range | categories | added | removed | kind | nullable
    before: Any
    after: Any

    def line(self) -> str:
        return f"{self.column}: {self.what} {_brief(self.before)} → {_brief(self.after)}"


@dataclass
class ContractDiff:
    """What changed from one contract revision to another (logged with each widening)."""

    before_revision: int
    after_revision: int
    changes: list[RuleChange]

    @property
    def hard(self) -> list[RuleChange]:
        """Changes a widening never makes (columns, kinds, nullability)."""
        return [c for c in self.changes if c.what not in ("range", "categories")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "before_revision": self.before_revision,
            "after_revision": self.after_revision,
            "changes": [asdict(c) for c in self.changes],
        }

    def summary(self) -> str:
        head = f"contract revision {self.before_revision} → {self.after_revision}"
        if not self.changes:
            return f"{head}: no changes"
        return "\n".join(
            [
                f"{head}: {len(self.changes)} change{'' if len(self.changes) == 1 else 's'}",
                *(f"  {c.line()}" for c in self.changes),
            ]
        )


def _brief(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        return "[" + ", ".join(_show(v) for v in value[:8]) + f", … {len(value)} in all]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "none" if value is None else _show(value)


def diff(before: Contract, after: Contract) -> ContractDiff:
    """Every rule difference between two contracts, column by column."""
    changes: list[RuleChange] = []
    old = {r.name: r for r in before.columns}
    new = {r.name: r for r in after.columns}
    for name in [*old, *(n for n in new if n not in old)]:
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            what = "added" if a is None else "removed"
            changes.append(RuleChange(name, what, a and a.kind, b and b.kind))
            continue
        if a.kind != b.kind:
            changes.append(RuleChange(name, "kind", a.kind, b.kind))
        if a.nullable != b.nullable:
            changes.append(RuleChange(name, "nullable", a.nullable, b.nullable))
        if (a.min, a.max) != (b.min, b.max):
            changes.append(RuleChange(name, "range", [a.min, a.max], [b.min, b.max]))
        if a.allowed != b.allowed:
            changes.append(RuleChange(name, "categories", a.allowed, b.allowed))
    return ContractDiff(before.revision, after.revision, changes)


def widen(contract: Contract, df: pd.DataFrame, reason: str = "") -> Contract:
    """A new revision whose soft rules (ranges, feature categories) admit ``df``.

    Only rules ``df`` breaks change: a range grows to cover the new values plus the
    contract's tolerance of their span (as `build_contract` pads a reference), unseen
    feature categories join the allowed set (past MAX_CATEGORIES the set is dropped).
    Hard rules never change here: a missing column, a wrong kind, empties or an unknown
    target class still fail `validate` on the widened contract.
    """
    import copy

    widened = copy.deepcopy(contract)
    widened.revision = contract.revision + 1
    note = f" Widened in revision {widened.revision}" + (f" ({reason})" if reason else "")
    for rule in widened.columns:
        if rule.name not in df.columns or rule.role == "time":
            continue
        values = df[rule.name]
        if rule.kind == "numeric" and rule.min is not None and rule.max is not None:
            present = pd.to_numeric(values, errors="coerce").dropna()
            if present.empty or (present.min() >= rule.min and present.max() <= rule.max):
                continue
            low, high = float(present.min()), float(present.max())
            span = high - low
            pad = contract.range_tolerance * (span if span > 0 else max(abs(low), 1.0))
            if low < rule.min:  # only the side the data broke moves
                rule.min = _round(low - pad)
            if high > rule.max:
                rule.max = _round(high + pad)
            rule.why[BETWEEN] = (
                rule.why.get(BETWEEN, "") + f"{note}: new data spans {low:g}..{high:g}."
            )
        elif rule.kind == "categorical" and rule.allowed is not None and rule.role != "target":
            unseen = [_plain(v) for v in values.dropna().unique() if v not in rule.allowed]
            if not unseen:
                continue
            merged = rule.allowed + sorted(unseen, key=lambda v: (str(type(v)), str(v)))
            if len(merged) > MAX_CATEGORIES:
                rule.allowed = None
                rule.why.pop(IN_SET, None)
            else:
                rule.allowed = merged
                shown = ", ".join(_show(v) for v in unseen[:EXAMPLES])
                rule.why[IN_SET] = rule.why.get(IN_SET, "") + f"{note}: admitted {shown}."
    return widened
