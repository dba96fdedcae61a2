"""Frame surgery for training, as plain functions: the time range, the snapshot of a new
frame, shuffled labels, float features, and the live rows a drift retrain appends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.errors import DataError
from data.live import (
    LIVE_LOGGED_AT,
    LIVE_REQUEST_ID,
    LIVE_SOURCE,
    MIN_LIVE_GATE_ROWS,
    accumulate_live_rows,
    append_live_rows,
    live_holdout_rows,
)
from data.sources import (
    Snapshot,
    dataset_digest,
    numeric_as_float,
    snapshot_of_frame,
    with_shuffled_labels,
)
from data.split import select_rows


def snapshot(days: int = 10, time_column: str | None = "day") -> Snapshot:
    frame = pd.DataFrame(
        {"day": np.arange(1, days + 1), "x": np.arange(days) * 2, "c": ["a", "b"] * (days // 2)}
    )
    frame["y"] = frame["x"] + 0.5
    return Snapshot(
        frame=frame,
        target="y",
        features=("x", "c"),
        time_column=time_column,
        digest=dataset_digest(frame),
        source="train.csv",
        task="regression",
        categorical=("c",),
        numeric=("x",),
    )


def test_select_rows_keeps_from_inclusive_until_exclusive_renumbered() -> None:
    frame = snapshot().frame
    part = select_rows(frame, "day", 3, 6)
    assert list(part["day"]) == [3, 4, 5] and list(part.index) == [0, 1, 2]
    assert list(select_rows(frame, "day", None, 3)["day"]) == [1, 2]
    assert list(select_rows(frame, "day", 9, None)["day"]) == [9, 10]
    assert select_rows(frame, None, None, None) is frame  # no bounds: the frame as it is


def test_select_rows_needs_a_time_column_that_exists() -> None:
    frame = snapshot().frame
    with pytest.raises(ValueError, match="--time-column"):
        select_rows(frame, None, 3, None)
    with pytest.raises(DataError, match="time column 'when' is not in the data"):
        select_rows(frame, "when", 3, None)


def test_snapshot_of_frame_recomputes_the_digest_and_drops_provenance() -> None:
    whole = snapshot()
    marked = snapshot_of_frame(whole, whole.frame)
    assert marked.digest == whole.digest
    head = whole.frame.head(4)
    part = snapshot_of_frame(
        Snapshot(**{**whole.__dict__, "provenance": pd.Series(["f"] * 10)}), head
    )
    assert part.frame is head and part.digest == dataset_digest(head) != whole.digest
    assert part.provenance is None and part.features == whole.features


def test_shuffled_labels_are_a_seeded_permutation_of_the_same_values() -> None:
    whole = snapshot(days=50)
    one, again = with_shuffled_labels(whole, 7), with_shuffled_labels(whole, 7)
    assert sorted(one.frame["y"]) == sorted(whole.frame["y"])
    assert list(one.frame["y"]) != list(whole.frame["y"])
    assert list(one.frame["y"]) == list(again.frame["y"])
    assert list(one.frame["x"]) == list(whole.frame["x"])  # only the target moves
    assert list(whole.frame["y"]) == list(whole.frame["x"] + 0.5)  # the original untouched


def test_numeric_as_float_casts_only_numeric_columns_it_finds() -> None:
    frame = snapshot().frame[["x", "c"]]
    cast = numeric_as_float(frame, ("x", "missing"))
    assert cast["x"].dtype == np.float64 and cast["c"].dtype == frame["c"].dtype
    assert list(cast["x"]) == [float(v) for v in frame["x"]]


def live(ids: range, logged_from: float, source: str | None = None) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "x": [100 + i for i in ids],
            "c": ["a"] * len(ids),
            "y": [0.0] * len(ids),
            LIVE_LOGGED_AT: [logged_from + k for k in range(len(ids))],
            LIVE_REQUEST_ID: [f"r{i}" for i in ids],
        }
    )
    if source is not None:
        rows[LIVE_SOURCE] = source
    return rows


def test_appended_live_rows_come_after_training_in_log_order_named_by_origin() -> None:
    base = snapshot()
    recent = pd.concat([live(range(0, 2), 5.0, "live window A"), live(range(2, 5), 9.0)])
    combined = append_live_rows(base, recent.reset_index(drop=True), "runs:/r/w.parquet")
    assert list(combined.frame.columns) == ["day", "x", "c", "y"]  # bookkeeping dropped
    assert list(combined.frame["x"]) == [*range(0, 20, 2), 100, 101, 102, 103, 104]
    days = combined.frame["day"].to_numpy()
    assert days[10:].tolist() == pytest.approx([10 + k / 6 for k in range(1, 6)])
    assert (
        list(combined.provenance)
        == ["train.csv"] * 10 + ["live window A"] * 2 + ["live window runs:/r/w.parquet"] * 3
    )
    assert combined.source == "train.csv + live window runs:/r/w.parquet"
    assert combined.digest == dataset_digest(combined.frame)


def test_appended_rows_with_their_own_time_are_sorted_into_place() -> None:
    base = snapshot()
    recent = live(range(0, 2), 0.0).assign(day=[2.5, 0.5])
    combined = append_live_rows(base, recent, "w")
    assert list(combined.frame["day"]) == [0.5, 1, 2, 2.5, *range(3, 11)]
    assert list(combined.provenance[:4]) == [
        "live window w",
        "train.csv",
        "train.csv",
        "live window w",
    ]


def test_live_rows_missing_a_model_column_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"w\.parquet lacks columns \['c'\]"):
        append_live_rows(snapshot(), live(range(0, 3), 0.0).drop(columns="c"), "w.parquet")


def test_accumulate_orders_unlogged_rows_first_and_keeps_the_newest() -> None:
    earlier = live(range(0, 3), 50.0, "A").drop(columns=LIVE_LOGGED_AT)  # an older file
    window = live(range(2, 6), 10.0, "B")  # r2 again: the earlier copy wins
    rows = accumulate_live_rows(earlier, window, max_rows=5)
    assert list(rows[LIVE_REQUEST_ID]) == ["r1", "r2", "r3", "r4", "r5"]
    assert list(rows[LIVE_SOURCE]) == ["A", "A", "B", "B", "B"]


def test_the_gate_finds_live_rows_of_the_holdout_only_when_there_are_enough() -> None:
    n = MIN_LIVE_GATE_ROWS
    base = snapshot(days=n * 2)
    combined = append_live_rows(base, live(range(0, n), 0.0), "w")
    holdout = combined.frame.iloc[n:]  # half training rows, all live rows
    mask = live_holdout_rows(combined, holdout)
    assert mask is not None and mask.tolist() == [False] * n + [True] * n
    assert live_holdout_rows(combined, combined.frame.iloc[n + 1 :].head(n)) is None
    assert live_holdout_rows(base, base.frame) is None  # no provenance: no live rows
