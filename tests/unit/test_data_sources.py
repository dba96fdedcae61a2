"""Loading tables and snapshots: what a user sees when their file is right or wrong."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.errors import DataError
from data.sources import (
    Snapshot,
    dataset_digest,
    describe_task_choice,
    infer_task,
    load_snapshot,
    load_table,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "bundled" / "bikeshare_2011.csv"


def small_frame(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(rows // 4), 4),
            "temp": rng.uniform(0, 1, rows).round(3),
            "city": rng.choice(["a", "b", "c"], rows),
            "count": rng.integers(0, 500, rows),
        }
    )


# -- load_table ---------------------------------------------------------------------


def test_csv_and_parquet_load_the_same_table(tmp_path: Path) -> None:
    frame = small_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    for name in ("d.csv", "d.parquet", "d.csv.gz"):
        pd.testing.assert_frame_equal(load_table(tmp_path / name), frame)


def test_semicolon_separated_csv_is_read_as_columns(tmp_path: Path) -> None:
    frame = small_frame()
    frame.to_csv(tmp_path / "d.csv", index=False, sep=";")
    assert list(load_table(tmp_path / "d.csv").columns) == list(frame.columns)


def test_other_suffix_is_refused_naming_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(small_frame()))
    with pytest.raises(DataError, match=r"model\.pkl is not CSV or Parquet.*\.parquet"):
        load_table(path)


def test_pickle_bytes_named_csv_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(pickle.dumps(small_frame()))
    with pytest.raises(DataError, match=r"data\.csv is not a CSV text file.*pickle"):
        load_table(path)


def test_binary_garbage_named_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"col\n" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"data\.csv is not a CSV text file.*binary"):
        load_table(path)


def test_parquet_named_csv_says_it_is_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    small_frame().to_parquet(path)
    with pytest.raises(DataError, match=r"Parquet file"):
        load_table(path)


def test_csv_named_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    small_frame().to_csv(path, index=False)
    with pytest.raises(DataError, match=r"data\.parquet is not a Parquet file"):
        load_table(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        load_table(tmp_path / "nope.csv")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is empty"):
        load_table(path)


def test_header_only_file_lists_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("temp,count\n")
    with pytest.raises(
        DataError, match=r"header\.csv has a header \(2 columns: temp, count\).*no rows"
    ):
        load_table(path)


def test_ragged_csv_is_refused_with_the_parser_detail(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match=r"ragged\.csv cannot be parsed as CSV.*fields"):
        load_table(path)


# -- digest -------------------------------------------------------------------------


def test_digest_ignores_the_index_but_not_row_order_or_values() -> None:
    frame = small_frame()
    digest = dataset_digest(frame)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert dataset_digest(frame.set_axis(range(100, 100 + len(frame)))) == digest
    assert dataset_digest(frame.copy()) == digest
    # Row order is part of the content: it decides which rows the time split holds out.
    assert dataset_digest(frame.iloc[::-1]) != digest
    changed = frame.copy()
    changed.loc[3, "temp"] += 0.001
    assert dataset_digest(changed) != digest
    assert dataset_digest(frame.rename(columns={"temp": "t"})) != digest
    assert dataset_digest(frame.astype({"count": float})) != digest


def test_digest_is_the_same_for_csv_and_parquet_copies(tmp_path: Path) -> None:
    frame = small_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    assert dataset_digest(load_table(tmp_path / "d.csv")) == dataset_digest(
        load_table(tmp_path / "d.parquet")
    )


# -- load_snapshot ------------------------------------------------------------------


def test_bundled_snapshot_is_time_ordered_regression_without_leaks() -> None:
    snap = load_snapshot(BUNDLED, "bikers", "day", ("casual", "registered"))
    assert isinstance(snap, Snapshot)
    assert snap.task == "regression"
    assert len(snap.frame) == 8645
    assert {"casual", "registered", "bikers", "day"}.isdisjoint(snap.features)
    assert set(snap.categorical) == {"mnth", "weathersit"}
    assert set(snap.numeric) | set(snap.categorical) == set(snap.features)
    assert snap.frame["day"].is_monotonic_increasing
    assert list(snap.X.columns) == list(snap.features)
    assert snap.y.name == "bikers"
    assert snap.source == str(BUNDLED)
    assert snap.digest == dataset_digest(snap.frame)


def test_snapshot_sorts_by_time_stably_and_keeps_file_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"t": [3, 1, 2, 1] * 10, "x": range(40), "y": range(40)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    snap = load_snapshot(tmp_path / "d.csv", "y", "t")
    assert snap.frame["t"].is_monotonic_increasing
    ones = snap.frame[snap.frame["t"] == 1]
    assert list(ones.index) == sorted(ones.index)  # stable: file order kept within a time
    assert snap.frame.loc[0, "x"] == 0  # index = row position in the file


def test_text_dates_in_the_time_column_are_parsed(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"when": ["2011-03-01", "2011-01-01", "2011-02-01"] * 10, "x": range(30), "y": range(30)}
    )
    frame.to_csv(tmp_path / "d.csv", index=False)
    snap = load_snapshot(tmp_path / "d.csv", "y", "when")
    assert snap.frame["when"].iloc[0] == pd.Timestamp("2011-01-01")


def test_missing_target_lists_columns_and_suggests_the_closest() -> None:
    with pytest.raises(DataError) as err:
        load_snapshot(BUNDLED, "bikerz", "day")
    message = str(err.value)
    assert "target column 'bikerz'" in message
    assert "Did you mean 'bikers'?" in message
    assert "temp" in message and "weathersit" in message
    assert "bikeshare_2011.csv" in message


def test_missing_time_column_is_named(tmp_path: Path) -> None:
    small_frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"time column 'date'"):
        load_snapshot(tmp_path / "d.csv", "count", "date")


def test_all_empty_target_is_refused(tmp_path: Path) -> None:
    frame = small_frame().assign(count=np.nan)
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"target column 'count' .* empty in all 40 rows"):
        load_snapshot(tmp_path / "d.csv", "count")


def test_partly_empty_target_loads_and_the_log_line_says_so(tmp_path: Path) -> None:
    frame = small_frame()
    frame.loc[[1, 2], "count"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    snap = load_snapshot(tmp_path / "d.csv", "count", "day")
    assert snap.y.isna().sum() == 2
    assert "2 rows have no label" in describe_task_choice(snap.y, snap.task)


def test_dropping_an_unknown_column_is_refused_with_a_suggestion() -> None:
    with pytest.raises(DataError, match=r"column to drop 'casaul'.*Did you mean 'casual'"):
        load_snapshot(BUNDLED, "bikers", "day", ("casaul",))


def test_dropping_the_target_is_refused() -> None:
    with pytest.raises(DataError, match=r"'bikers' .* is the target"):
        load_snapshot(BUNDLED, "bikers", "day", ("bikers",))


def test_date_feature_must_become_the_time_column_or_be_dropped(tmp_path: Path) -> None:
    frame = small_frame().assign(seen=pd.date_range("2011-01-01", periods=40, freq="h"))
    frame.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"feature 'seen' .* holds dates: set it as the time"):
        load_snapshot(tmp_path / "d.parquet", "count")
    snap = load_snapshot(tmp_path / "d.parquet", "count", "seen")
    assert snap.time_column == "seen" and "seen" not in snap.features


def test_empty_times_are_refused_with_their_rows(tmp_path: Path) -> None:
    frame = small_frame().astype({"day": float})
    frame.loc[5, "day"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"time column 'day' .* 1 empty values \(rows 5\)"):
        load_snapshot(tmp_path / "d.csv", "count", "day")


def test_declared_categorical_numbers_are_categorical(tmp_path: Path) -> None:
    small_frame().to_csv(tmp_path / "d.csv", index=False)
    snap = load_snapshot(tmp_path / "d.csv", "count", categorical_columns=("day",))
    assert "day" in snap.categorical and "day" not in snap.numeric


# -- tasks --------------------------------------------------------------------------


def test_continuous_target_is_regression() -> None:
    y = pd.Series(np.linspace(0, 1, 200), name="price")
    assert infer_task(y) == "regression"
    assert describe_task_choice(y, "regression").startswith(
        "task inferred as regression: target 'price' is numeric with 200 distinct values"
    )


def test_integer_counts_with_many_values_are_regression() -> None:
    assert infer_task(pd.Series(np.arange(1000) % 300, name="bikers")) == "regression"


def test_binary_integer_labels_are_classification() -> None:
    y = pd.Series([0, 1] * 50, name="churn")
    assert infer_task(y) == "classification"
    assert "2 distinct values" in describe_task_choice(y, "classification")


def test_multiclass_integer_labels_are_classification() -> None:
    assert infer_task(pd.Series(np.arange(200) % 5)) == "classification"


def test_integer_labels_with_nan_are_still_classification() -> None:
    y = pd.Series([0.0, 1.0, np.nan] * 40)
    assert infer_task(y) == "classification"


def test_few_rows_of_small_integers_are_regression_by_the_5_percent_rule() -> None:
    assert infer_task(pd.Series([0, 1, 2] * 10)) == "regression"


def test_string_and_bool_labels_are_classification() -> None:
    assert infer_task(pd.Series(["cat", "dog", "bird"] * 5)) == "classification"
    assert infer_task(pd.Series([True, False] * 5)) == "classification"


def test_unknown_task_lists_the_allowed_ones() -> None:
    with pytest.raises(
        DataError, match=r"unknown task 'regresion' \(did you mean 'regression'\?\).*auto"
    ):
        infer_task(pd.Series([1.0, 2.0]), "regresion")


def test_regression_declared_on_text_is_refused() -> None:
    with pytest.raises(DataError, match=r"'regression' needs a numeric target.*'cat'"):
        infer_task(pd.Series(["cat", "dog"] * 5, name="pet"), "regression")


def test_classification_with_too_many_classes_suggests_regression() -> None:
    with pytest.raises(DataError, match=r"100 distinct values.*use task 'regression'"):
        infer_task(pd.Series(np.arange(100)), "classification")


def test_classification_with_one_class_is_refused() -> None:
    with pytest.raises(DataError, match=r"single class"):
        infer_task(pd.Series(["yes"] * 10, name="label"), "classification")


def test_declared_classification_on_integers_is_kept() -> None:
    assert infer_task(pd.Series([0, 1, 2] * 10), "classification") == "classification"


def test_all_empty_target_has_no_task() -> None:
    with pytest.raises(DataError, match=r"no values"):
        infer_task(pd.Series([np.nan, np.nan], name="y"))


def test_importing_data_does_not_import_great_expectations() -> None:
    code = (
        "import sys, data, data.sources, data.split, data.errors; "
        "from data import load_snapshot; "
        "assert 'great_expectations' not in sys.modules, 'GE imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
