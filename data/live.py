"""Live rows: labelled traffic a drift retrain adds to the training data.

The monitor writes them (features, target and the columns below), the training flow
appends them to the snapshot, and the gate compares on the holdout rows that came
from them. Pure frame functions: no I/O, tested without servers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from data.sources import Snapshot, snapshot_of_frame

# Where each live row came from, when it was logged and its request id; training drops
# these columns (they are not features).
LIVE_SOURCE = "_driftloop_source"
LIVE_LOGGED_AT = "_driftloop_logged_at"
LIVE_REQUEST_ID = "_driftloop_request_id"
LIVE_COLUMNS = (LIVE_SOURCE, LIVE_LOGGED_AT, LIVE_REQUEST_ID)
LIVE_ORIGIN_PREFIX = "live window"  # how the origin of every row from a live window begins
MIN_LIVE_GATE_ROWS = 30  # fewest live-window holdout rows the gate compares on (else all)


def accumulate_live_rows(
    earlier: pd.DataFrame, window: pd.DataFrame, max_rows: int
) -> pd.DataFrame:
    """The live rows a drift retrain trains on: the champion's earlier live rows plus the
    new window's, each request once (its earliest copy), the newest `max_rows` kept.

    Rows without a logging time (files of older versions) count as the oldest; rows
    without a source are named by the caller before they come here.
    """
    frames = [f for f in (earlier, window) if not f.empty]
    if not frames:
        return window.iloc[0:0]
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    if LIVE_REQUEST_ID in rows.columns:
        ids = rows[LIVE_REQUEST_ID]
        rows = rows[ids.isna() | ~ids.duplicated(keep="first")]
    if LIVE_LOGGED_AT in rows.columns:
        order = pd.to_numeric(rows[LIVE_LOGGED_AT], errors="coerce").fillna(float("-inf"))
        rows = rows.iloc[order.argsort(kind="stable").to_numpy()]
    return rows.tail(max_rows).reset_index(drop=True)


def _after_training_rows(snapshot: Snapshot, recent: pd.DataFrame) -> pd.DataFrame:
    """`recent` with the snapshot's time column added when it lacks one: logged traffic
    carries features, not the training time column; it is more recent than every
    training row, so it goes after them, in log order."""
    time_column = snapshot.time_column
    if not time_column or time_column in recent.columns:
        return recent
    last = float(snapshot.frame[time_column].max())
    steps = (1 + pd.RangeIndex(len(recent)).to_numpy()) / (len(recent) + 1)
    return recent.assign(**{time_column: last + steps})


def append_live_rows(snapshot: Snapshot, recent: pd.DataFrame, name: str) -> Snapshot:
    """The snapshot with recent labelled rows (same columns) appended, in time order.

    Each added row's origin is its `LIVE_SOURCE` value when the rows have one (rows
    carried over from earlier retrains name their own window), else ``live window
    <name>`` (`name`: the file or artifact URI they came from): contract failures count
    offending rows per origin, and the gate finds the live rows by it.
    """
    missing = [c for c in [*snapshot.features, snapshot.target] if c not in recent.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} that the model needs")
    here = f"{LIVE_ORIGIN_PREFIX} {name}"
    sources = (
        recent[LIVE_SOURCE].fillna(here).astype(str).to_numpy()
        if LIVE_SOURCE in recent.columns
        else [here] * len(recent)
    )
    recent = recent[[c for c in snapshot.frame.columns if c in recent.columns]].copy()
    recent = _after_training_rows(snapshot, recent)
    before = (
        snapshot.provenance
        if snapshot.provenance is not None
        else pd.Series(snapshot.source, index=snapshot.frame.index)
    )
    origin = pd.concat([before, pd.Series(sources, index=recent.index)], ignore_index=True)
    frame = pd.concat([snapshot.frame, recent], ignore_index=True)
    if snapshot.time_column:
        order = frame[snapshot.time_column].argsort(kind="stable").to_numpy()
        frame = frame.iloc[order].reset_index(drop=True)
        origin = origin.iloc[order].reset_index(drop=True)
    appended = snapshot_of_frame(snapshot, frame)
    return replace(appended, provenance=origin, source=f"{snapshot.source} + {here}")


def live_holdout_rows(snapshot: Snapshot, holdout: pd.DataFrame) -> np.ndarray | None:
    """Which holdout rows came from live windows (a drift retrain), when there are at least
    `MIN_LIVE_GATE_ROWS` of them; None otherwise.

    The gate compares a drift retrain with the champion on these rows: the traffic the
    new version will serve. On the whole holdout the training file's rows, which the
    champion still handles well, can outweigh the drifted ones, and a retrain that fixes
    the drift loses the gate by a small average gain (seen with 17 % drifted rows: +0.8 %
    against a 2 % margin, while the champion's F1 on the drifted rows was 0.16).
    """
    if snapshot.provenance is None:
        return None
    origin = snapshot.provenance.reindex(holdout.index).astype(str)
    live = origin.str.startswith(LIVE_ORIGIN_PREFIX).to_numpy()
    return live if int(live.sum()) >= MIN_LIVE_GATE_ROWS else None
