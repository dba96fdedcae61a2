"""Holdout and validation splits that respect time: the latest rows are held out.

With a time column the split is never shuffled: training only ever sees the past
of what it is scored on. Rows sharing one time value stay on the same side, so a
day is never half in training and half in the holdout. Without a time column the
split is random but seeded. Both parts keep the input's index labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from data.errors import DataError

MIN_SPLIT_ROWS = 10
"""Fewest rows either part of a split may have."""


def _check_time_column(df: pd.DataFrame, time_column: str) -> None:
    if time_column not in df.columns:
        raise DataError(
            f"time column '{time_column}' is not in the data; columns: "
            f"{', '.join(map(str, df.columns))}"
        )


def _cut_at_time_boundary(times: np.ndarray, cut: int) -> int:
    """Move ``cut`` so that equal times stay together, choosing the nearer boundary."""
    value = times[cut]
    left = int(np.searchsorted(times, value, side="left"))
    right = int(np.searchsorted(times, value, side="right"))
    candidates = [c for c in (left, right) if 0 < c < len(times)]
    if not candidates:
        return cut
    return min(candidates, key=lambda c: abs(c - cut))


def _split(
    df: pd.DataFrame,
    time_column: str | None,
    fraction: float,
    seed: int,
    parts: tuple[str, str],
    setting: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    first, second = parts
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{setting} is {fraction}: it must be between 0 and 1 (e.g. 0.2)")
    n = len(df)
    n_second = round(n * fraction)
    if time_column is not None:
        _check_time_column(df, time_column)
        ordered = df.sort_values(time_column, kind="stable")
        if 0 < n - n_second < n:
            cut = _cut_at_time_boundary(ordered[time_column].to_numpy(), n - n_second)
            n_second = n - cut
        head, tail = ordered.iloc[: n - n_second], ordered.iloc[n - n_second :]
    else:
        order = np.random.default_rng(seed).permutation(n)
        chosen = np.sort(order[:n_second])
        mask = np.zeros(n, dtype=bool)
        mask[chosen] = True
        head, tail = df.iloc[~mask], df.iloc[mask]
    if len(head) < MIN_SPLIT_ROWS or len(tail) < MIN_SPLIT_ROWS:
        needed = int(np.ceil(MIN_SPLIT_ROWS / min(fraction, 1 - fraction)))
        raise DataError(
            f"only {n} rows: {setting}={fraction} leaves {len(head)} {first} and "
            f"{len(tail)} {second} rows; need at least {MIN_SPLIT_ROWS} in each "
            f"(about {needed}+ rows at this fraction): add data or change {setting}"
        )
    return head, tail


def time_split(
    df: pd.DataFrame, time_column: str | None, holdout_fraction: float, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (train, holdout); with a time column the holdout is the latest rows."""
    return _split(
        df, time_column, holdout_fraction, seed, ("training", "holdout"), "holdout_fraction"
    )


def train_validation_split(
    df: pd.DataFrame, time_column: str | None, validation_fraction: float, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split training rows into (fit, validation) for early stopping, latest rows last."""
    return _split(
        df,
        time_column,
        validation_fraction,
        seed,
        ("fit", "validation"),
        "validation_fraction",
    )


def slice_by_time(df: pd.DataFrame, time_column: str, start: Any, end: Any) -> pd.DataFrame:
    """Rows with ``start <= time < end`` in their original order; None leaves a side open.

    For a datetime column, ``start``/``end`` may be strings such as '2011-03-01'.
    """
    _check_time_column(df, time_column)
    times = df[time_column]
    if ptypes.is_datetime64_any_dtype(times):
        try:
            start = None if start is None else pd.Timestamp(start)
            end = None if end is None else pd.Timestamp(end)
        except ValueError as exc:
            raise DataError(
                f"cannot read {start!r}..{end!r} as dates for time column '{time_column}' "
                f"({exc}): use ISO dates such as '2011-03-01'"
            ) from exc
    mask = pd.Series(True, index=df.index)
    try:
        if start is not None:
            mask &= times >= start
        if end is not None:
            mask &= times < end
    except TypeError as exc:
        raise DataError(
            f"cannot compare time column '{time_column}' ({times.dtype}, e.g. "
            f"{times.iloc[0]!r}) with {start!r}..{end!r}: pass bounds of the same kind"
        ) from exc
    return df[mask]


def select_rows(
    frame: pd.DataFrame,
    time_column: str | None,
    time_from: float | None,
    time_until: float | None,
) -> pd.DataFrame:
    """Rows with time_from ≤ time < time_until, renumbered from 0 (the training flow's
    time range); the frame as it is without bounds. Bounds need a time column."""
    if time_from is None and time_until is None:
        return frame
    if time_column is None:
        raise ValueError("--time-from/--time-until need a time column (--time-column)")
    return slice_by_time(frame, time_column, time_from, time_until).reset_index(drop=True)
