"""Small helpers on frames shared by drift and OOD: bounded sampling, category keys."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np
import pandas as pd

_A = TypeVar("_A", pd.DataFrame, np.ndarray)


def sample_rows(data: _A, max_rows: int, seed: int = 0) -> tuple[_A, bool]:
    """At most ``max_rows`` rows drawn without replacement, kept in their original order.

    Deterministic for a given seed and length. Returns the rows and whether it sampled.
    Sampling happens before anything copies the columns, so a 1M-row window costs one
    index draw and a 20k-row copy.
    """
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    n = len(data)
    if n <= max_rows:
        return data, False
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(n, size=max_rows, replace=False))
    if isinstance(data, pd.DataFrame):
        return data.iloc[index], True
    return data[index], True


def category_key(value: Hashable) -> str | None:
    """One spelling per category: None for missing, ``1.0`` and ``1`` both become ``"1"``.

    A column of integer codes turns float as soon as one value is missing; without this
    the same category would look unseen in the live window.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def category_keys(column: pd.Series) -> pd.Series:
    """``category_key`` of every value, computed once per distinct value (object dtype)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    keys = np.array([category_key(u) for u in uniques] + [None], dtype=object)
    return pd.Series(keys[codes], index=column.index, dtype=object)
