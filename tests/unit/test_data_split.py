"""Splits: the holdout is the future, never a shuffle of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.errors import DataError
from data.sources import load_snapshot
from data.split import slice_by_time, time_split, train_validation_split

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"


def hourly(days: int = 30, shuffled: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"day": np.repeat(np.arange(1, days + 1), 24), "hr": np.tile(np.arange(24), days)}
    )
    frame["y"] = np.arange(len(frame))
    if shuffled:
        frame = frame.sample(frac=1.0, random_state=0)
    return frame


def test_holdout_is_the_latest_rows_in_time_order() -> None:
    train, holdout = time_split(hourly(shuffled=True), "day", 0.2)
    assert train["day"].max() < holdout["day"].min()
    assert holdout["day"].is_monotonic_increasing and train["day"].is_monotonic_increasing
    assert len(train) + len(holdout) == 720
    assert set(train.index).isdisjoint(holdout.index)


def test_time_split_ignores_the_seed_because_it_never_shuffles() -> None:
    frame = hourly()
    first = time_split(frame, "day", 0.25, seed=1)
    second = time_split(frame, "day", 0.25, seed=2)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert list(first[1]["y"]) == sorted(first[1]["y"])  # file order within the holdout


def test_one_day_is_never_split_between_training_and_holdout() -> None:
    train, holdout = time_split(hourly(days=10), "day", 0.33)  # 79.2 rows: mid-day
    assert len(holdout) % 24 == 0
    assert set(train["day"]).isdisjoint(holdout["day"])


def test_bundled_holdout_is_the_last_fifth_of_2011() -> None:
    snap = load_snapshot(BUNDLED, "bikers", "day", ("casual", "registered"))
    train, holdout = time_split(snap.frame, "day", 0.2)
    assert abs(len(holdout) / len(snap.frame) - 0.2) < 0.01
    assert holdout["day"].min() > train["day"].max()
    assert holdout["mnth"].iloc[-1] == "Dec"


def test_without_time_column_the_split_is_random_but_seeded() -> None:
    frame = hourly()
    train_a, hold_a = time_split(frame, None, 0.2, seed=7)
    _, hold_b = time_split(frame, None, 0.2, seed=7)
    _, hold_c = time_split(frame, None, 0.2, seed=8)
    assert list(hold_a.index) == list(hold_b.index)
    assert list(hold_a.index) != list(hold_c.index)
    assert hold_a["day"].max() > train_a["day"].min()  # mixed in time: random
    assert sorted([*train_a.index, *hold_a.index]) == list(frame.index)


def test_too_few_rows_are_refused_saying_how_many_are_needed() -> None:
    with pytest.raises(DataError, match=r"only 30 rows: holdout_fraction=0.2 leaves 24 .* 6 "):
        time_split(hourly(days=30).head(30).assign(day=range(30)), "day", 0.2)


def test_a_fraction_outside_0_1_is_refused() -> None:
    with pytest.raises(DataError, match=r"holdout_fraction is 1.5: it must be between 0 and 1"):
        time_split(hourly(), "day", 1.5)


def test_missing_time_column_is_named() -> None:
    with pytest.raises(DataError, match=r"time column 'date' is not in the data"):
        time_split(hourly(), "date", 0.2)


def test_validation_split_takes_the_last_training_rows() -> None:
    fit, validation = train_validation_split(hourly(), "day", 0.15)
    assert fit["day"].max() < validation["day"].min()
    with pytest.raises(DataError, match=r"validation_fraction=0.15 leaves 34 fit and 6 validation"):
        train_validation_split(pd.DataFrame({"day": range(40)}), "day", 0.15)


def test_slice_by_time_includes_start_and_excludes_end() -> None:
    part = slice_by_time(hourly(), "day", 3, 5)
    assert sorted(set(part["day"])) == [3, 4]
    assert len(slice_by_time(hourly(), "day", None, 2)) == 24
    assert len(slice_by_time(hourly(), "day", 30, None)) == 24


def test_slice_by_time_reads_date_strings_for_datetime_columns() -> None:
    frame = pd.DataFrame({"when": pd.date_range("2011-01-01", periods=90, freq="D")})
    part = slice_by_time(frame, "when", "2011-02-01", "2011-03-01")
    assert len(part) == 28 and part["when"].min() == pd.Timestamp("2011-02-01")


def test_slice_by_time_with_mismatched_bounds_says_so() -> None:
    frame = pd.DataFrame({"when": pd.date_range("2011-01-01", periods=9, freq="D")})
    with pytest.raises(DataError, match=r"cannot read .* as dates for time column 'when'"):
        slice_by_time(frame, "when", "spring", None)
