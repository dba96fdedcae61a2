"""Read a training table (CSV or Parquet) into a typed, time-ordered snapshot.

A :class:`Snapshot` is what training sees: the frame sorted by time, the target,
the feature columns split into categorical and numeric, the task, and a content
digest that MLflow records so every model version names the data it learnt from.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from data.errors import DataError

if TYPE_CHECKING:
    from config.settings import DatasetSpec

TASKS = ("auto", "regression", "classification")
MAX_CLASSES = 50
"""More distinct labels than this is not a classification problem driftloop accepts."""
AUTO_MAX_CLASSES = 20
AUTO_MAX_CLASS_SHARE = 0.05
"""'auto' calls an integer target a class label only with <= 20 values and <= 5 % of rows."""
DIGEST_CHARS = 16

_CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SNIFF_BYTES = 8192
_PICKLE_PROTOCOLS = {0x80}  # protocol 2+ starts with the PROTO opcode
_MAGIC = {
    b"PAR1": "a Parquet file (rename it to .parquet)",
    b"PK\x03\x04": "a zip archive or an Excel workbook (save the sheet as CSV)",
    b"\x1f\x8b": "gzip-compressed (name it .csv.gz)",
    b"SQLite format 3": "a SQLite database (export the table to CSV)",
}


# -- reading files -------------------------------------------------------------


def _suffix_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    suffix = "".join(path.suffixes) or "(none)"
    raise DataError(
        f"{path} is not CSV or Parquet (suffix {suffix}): driftloop reads "
        f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}; export the table to one of those"
    )


def _head_bytes(path: Path, compressed: bool) -> bytes:
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                return fh.read(_SNIFF_BYTES)
        with path.open("rb") as fh:
            return fh.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read ({exc}): check the file is a valid gzip") from exc


def _sniff_text(path: Path, head: bytes) -> None:
    """Refuse binary content in a file named like text, saying what it looks like."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise DataError(f"{path} is not a CSV text file: it looks like {what}")
    if head[:1] and head[0] in _PICKLE_PROTOCOLS:
        raise DataError(
            f"{path} is not a CSV text file: it looks like a Python pickle "
            "(never load pickles from untrusted sources); save the table with "
            "DataFrame.to_csv or DataFrame.to_parquet instead"
        )
    if b"\x00" in head:
        raise DataError(
            f"{path} is not a CSV text file: it contains binary data (NUL bytes in the first "
            f"{len(head)} bytes); save the table as UTF-8 CSV or as Parquet"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the end is fine
            raise DataError(
                f"{path} is not UTF-8 text (byte 0x{head[exc.start]:02x} at offset "
                f"{exc.start}): save it as UTF-8 CSV"
            ) from exc


def _read_csv(path: Path) -> pd.DataFrame:
    compressed = path.name.lower().endswith(".gz")
    head = _head_bytes(path, compressed)
    if not head.strip():
        raise DataError(f"{path} is empty: it has no header and no rows")
    _sniff_text(path, head)
    sep = "\t" if ".tsv" in path.name.lower() else ","
    try:
        frame = pd.read_csv(path, sep=sep, low_memory=False)
        if frame.shape[1] == 1 and sep == ",":
            # One column whose name holds ';' or tabs: a CSV written with another separator.
            name = str(frame.columns[0])
            other = ";" if ";" in name else ("\t" if "\t" in name else None)
            if other is not None:
                frame = pd.read_csv(path, sep=other, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty: it has no header and no rows") from exc
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path} cannot be parsed as CSV ({exc}): check quoting and that every row has "
            "as many fields as the header"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}): save it as UTF-8 CSV") from exc
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise DataError(
            f"{path} is not a Parquet file (it does not start with the PAR1 marker): "
            "write it with DataFrame.to_parquet, or name a CSV file .csv"
        )
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{path} cannot be read as Parquet ({exc}): rewrite the file") from exc


def load_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV (.csv, .csv.gz, .txt, .tsv) or Parquet (.parquet, .pq) file, chosen by suffix.

    Raises DataError for a missing, empty, header-only, binary or unparsable file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist (resolved: {path.resolve()})")
    if path.is_dir():
        raise DataError(f"{path} is a folder: point to one CSV or Parquet file inside it")
    kind = _suffix_kind(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): it has no header and no rows")
    frame = _read_csv(path) if kind == "csv" else _read_parquet(path)
    if frame.shape[1] == 0:
        raise DataError(f"{path} has no columns")
    if len(frame) == 0:
        raise DataError(
            f"{path} has a header ({frame.shape[1]} columns: {_names(frame.columns)}) but no "
            "rows: add data rows"
        )
    return frame


# -- digest ----------------------------------------------------------------------


def dataset_digest(df: pd.DataFrame) -> str:
    """Content digest of a frame: the first 16 hex characters (64 bits) of a sha256.

    It covers column names, dtypes and values in row order, and ignores the index: the
    same rows in another order give another digest, because row (time) order decides
    the splits and so what a model learns.
    """
    header = json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode()
    rows = pd.util.hash_pandas_object(df, index=False).to_numpy(dtype=np.uint64)
    digest = hashlib.sha256(header)
    digest.update(rows.tobytes())
    return digest.hexdigest()[:DIGEST_CHARS]


# -- tasks -----------------------------------------------------------------------


def _is_integral(values: pd.Series) -> bool:
    """Integer dtype, or floats that are all whole numbers (an int label column with NaN)."""
    if ptypes.is_bool_dtype(values) or not ptypes.is_numeric_dtype(values):
        return False
    if ptypes.is_integer_dtype(values):
        return True
    array = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0))


def _label(y: pd.Series) -> str:
    return f"'{y.name}'" if y.name is not None else "the target"


def _check_classes(y: pd.Series, labels: pd.Series, task_word: str) -> None:
    n_classes = int(labels.nunique())
    if n_classes > MAX_CLASSES:
        raise DataError(
            f"{task_word}: target {_label(y)} has {n_classes} distinct values, more than "
            f"{MAX_CLASSES} classes; if it is a quantity, use task 'regression', otherwise "
            "group the labels"
        )
    if n_classes < 2:
        raise DataError(
            f"{task_word}: target {_label(y)} has a single class "
            f"({_examples(labels.unique())}): a classifier needs at least two; "
            "use data with more than one label"
        )


def infer_task(y: pd.Series, declared: str = "auto") -> str:
    """Resolve the task: check a declared one against the target, or infer it ('auto').

    'auto' picks classification for text/bool targets and for integer targets with at
    most 20 distinct values that are at most 5 % of the rows; regression otherwise.
    """
    if declared not in TASKS:
        hint = difflib.get_close_matches(str(declared), TASKS, n=1)
        maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise DataError(f"unknown task '{declared}'{maybe}: use one of {', '.join(TASKS)}")
    labels = y.dropna()
    if labels.empty:
        raise DataError(
            f"target {_label(y)} has no values (all {len(y)} are empty): choose the column "
            "that holds the labels"
        )
    numeric = ptypes.is_numeric_dtype(labels) and not ptypes.is_bool_dtype(labels)
    if declared == "regression":
        if not numeric:
            raise DataError(
                f"task 'regression' needs a numeric target, but {_label(y)} holds "
                f"{'booleans' if ptypes.is_bool_dtype(labels) else 'text'} such as "
                f"{_examples(labels.unique())}: use task 'classification' or another target"
            )
        return "regression"
    if declared == "classification":
        _check_classes(y, labels, "task 'classification'")
        return "classification"
    if not numeric:
        _check_classes(y, labels, "task inferred as classification")
        return "classification"
    n_distinct = int(labels.nunique())
    if (
        _is_integral(labels)
        and n_distinct <= AUTO_MAX_CLASSES
        and n_distinct <= AUTO_MAX_CLASS_SHARE * len(labels)
    ):
        _check_classes(y, labels, "task inferred as classification")
        return "classification"
    return "regression"


def describe_task_choice(y: pd.Series, task: str, declared: str = "auto") -> str:
    """One sentence saying which task applies and why, for logs."""
    labels = y.dropna()
    n_distinct = int(labels.nunique())
    how = "inferred as" if declared == "auto" else "declared as"
    if ptypes.is_bool_dtype(labels):
        kind = "boolean"
    elif not ptypes.is_numeric_dtype(labels):
        kind = "text"
    elif _is_integral(labels):
        kind = "integer"
    else:
        kind = "numeric"
    text = (
        f"task {how} {task}: target {_label(y)} is {kind} with {n_distinct:,} distinct "
        f"values in {len(labels):,} labelled rows"
    )
    if task == "classification":
        text += f" ({_examples(sorted(labels.unique(), key=str), limit=5)})"
    elif kind == "integer" and declared == "auto":
        text += (
            f" (too many for class labels, which need <= {AUTO_MAX_CLASSES} values and "
            "<= 5 % of rows)"
        )
    missing = len(y) - len(labels)
    if missing:
        text += f"; {missing:,} rows have no label"
    return text


# -- snapshot --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One loaded dataset, ready for splitting and training.

    ``frame`` is sorted by ``time_column`` (stable) and keeps the file's row positions
    (0-based) as its index, so an error about a row points back to the file.
    Snapshots compare by identity (``eq=False``): frames have no plain equality.
    """

    frame: pd.DataFrame
    target: str
    features: tuple[str, ...]
    time_column: str | None
    digest: str
    source: str
    task: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    provenance: pd.Series | None = None
    """Where each row came from (index as ``frame``), when rows were appended from
    another source such as a retrain's live window; None: every row is from ``source``."""

    @property
    def X(self) -> pd.DataFrame:
        """The feature columns."""
        return self.frame[list(self.features)]

    @property
    def y(self) -> pd.Series:
        """The target column."""
        return self.frame[self.target]


def snapshot_of_frame(snapshot: Snapshot, frame: pd.DataFrame) -> Snapshot:
    """The snapshot describing `frame` instead (same columns): digest recomputed,
    provenance dropped."""
    return replace(snapshot, frame=frame, digest=dataset_digest(frame), provenance=None)


def with_shuffled_labels(snapshot: Snapshot, seed: int) -> Snapshot:
    """The snapshot with its target permuted (a deliberately useless model)."""
    frame = snapshot.frame.copy()
    frame[snapshot.target] = frame[snapshot.target].sample(frac=1.0, random_state=seed).to_numpy()
    return replace(snapshot, frame=frame)


def numeric_as_float(frame: pd.DataFrame, numeric: Sequence[str]) -> pd.DataFrame:
    """The frame with numeric feature columns as float64 (how the service sends them)."""
    return frame.astype({column: "float64" for column in numeric if column in frame.columns})


def _names(columns: Iterable[object], limit: int = 30) -> str:
    names = [str(c) for c in columns]
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _examples(values: Iterable[object], limit: int = 3) -> str:
    items = list(values)
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in items[:limit])
    return shown + (", …" if len(items) > limit else "")


def _missing_column(path: Path | str, what: str, name: str, columns: Sequence[str]) -> DataError:
    hint = difflib.get_close_matches(name, [str(c) for c in columns], n=1, cutoff=0.6)
    maybe = f" Did you mean '{hint[0]}'?" if hint else ""
    return DataError(
        f"{what} '{name}' is not a column of {path}.{maybe} Columns: {_names(columns)}"
    )


def _prepare_time(frame: pd.DataFrame, time_column: str, path: Path | str) -> pd.Series:
    """The time column as numbers or datetimes; text is parsed as dates."""
    times = frame[time_column]
    empty = times.isna()
    if empty.any():
        rows = list(frame.index[empty][:5])
        raise DataError(
            f"time column '{time_column}' of {path} has {int(empty.sum())} empty values "
            f"(rows {_examples(rows, limit=5)}): fill or drop those rows; rows without a "
            "time cannot be placed before or after the holdout"
        )
    if ptypes.is_numeric_dtype(times) or ptypes.is_datetime64_any_dtype(times):
        return times
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return pd.to_datetime(times)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"time column '{time_column}' of {path} holds values such as "
            f"{_examples(times.unique())} that are neither numbers nor dates ({exc}): use "
            "ISO dates (2011-01-31) or numbers, or choose another time column"
        ) from exc


def load_dataset(spec: DatasetSpec, task: str = "auto") -> Snapshot:
    """Read and check the data a `DatasetSpec` (the settings' dataset) names."""
    return load_snapshot(
        spec.path,
        target=spec.target,
        time_column=spec.time_column,
        drop_columns=spec.drop_columns,
        categorical_columns=spec.categorical_columns,
        task=task,
    )


def load_snapshot(
    path: Path | str,
    target: str,
    time_column: str | None = None,
    drop_columns: Sequence[str] = (),
    task: str = "auto",
    categorical_columns: Sequence[str] = (),
) -> Snapshot:
    """Load a table and describe it for training.

    Drops ``drop_columns`` (ids, target leaks), sorts by ``time_column`` (stable),
    resolves the task and splits the features into categorical and numeric columns
    (``categorical_columns`` forces numeric codes such as a season number to categorical).
    """
    frame = load_table(path)
    _check_roles(frame, path, target, time_column, drop_columns)
    frame = frame.drop(columns=list(dict.fromkeys(drop_columns)))
    if frame[target].isna().all():
        raise DataError(
            f"target column '{target}' of {path} is empty in all {len(frame)} rows: "
            "choose the column that holds the labels"
        )
    if time_column is not None:
        frame[time_column] = _prepare_time(frame, time_column, path)
        frame = frame.sort_values(time_column, kind="stable")
    features = tuple(str(c) for c in frame.columns if c not in (target, time_column))
    if not features:
        raise DataError(f"{path} has no feature columns left besides the target and time column")
    categorical, numeric = _feature_kinds(frame, path, features, categorical_columns)
    try:
        resolved = infer_task(frame[target], task)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    return Snapshot(
        frame=frame,
        target=target,
        features=features,
        time_column=time_column,
        digest=dataset_digest(frame),
        source=str(path),
        task=resolved,
        categorical=categorical,
        numeric=numeric,
    )


def _check_roles(
    frame: pd.DataFrame,
    path: Path | str,
    target: str,
    time_column: str | None,
    drop_columns: Sequence[str],
) -> None:
    """The target, the time column and the columns to drop name columns of the table,
    and no column plays two of those roles."""
    columns = [str(c) for c in frame.columns]
    if not target:
        raise DataError(f"no target column given for {path}: name one of {_names(columns)}")
    if target not in frame.columns:
        raise _missing_column(path, "target column", target, columns)
    if time_column is not None:
        if time_column not in frame.columns:
            raise _missing_column(path, "time column", time_column, columns)
        if time_column == target:
            raise DataError(f"'{target}' of {path} cannot be both the target and the time column")
    for name in dict.fromkeys(drop_columns):
        if name not in frame.columns:
            raise _missing_column(path, "column to drop", name, columns)
        if name in (target, time_column):
            role = "target" if name == target else "time column"
            raise DataError(f"'{name}' of {path} is the {role}: remove it from the drop columns")


def _feature_kinds(
    frame: pd.DataFrame,
    path: Path | str,
    features: tuple[str, ...],
    categorical_columns: Sequence[str],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categorical, numeric) feature columns: text, booleans and the declared
    `categorical_columns` are categorical; dates and durations are refused."""
    forced = set(categorical_columns)
    for name in forced:
        if name not in features:
            raise _missing_column(path, "categorical column", name, features)
    categorical: list[str] = []
    numeric: list[str] = []
    for name in features:
        column = frame[name]
        if ptypes.is_datetime64_any_dtype(column) or isinstance(column.dtype, pd.PeriodDtype):
            raise DataError(
                f"feature '{name}' of {path} holds dates: set it as the time column "
                f"(time_column='{name}') or add it to the drop columns"
            )
        if ptypes.is_timedelta64_dtype(column):
            raise DataError(
                f"feature '{name}' of {path} holds durations: convert them to numbers "
                "(e.g. seconds) or add it to the drop columns"
            )
        if name in forced or ptypes.is_bool_dtype(column) or not ptypes.is_numeric_dtype(column):
            categorical.append(name)
        else:
            numeric.append(name)
    return tuple(categorical), tuple(numeric)
