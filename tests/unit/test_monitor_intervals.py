"""The monitor's live-gain intervals: which rows each version is judged on."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from monitoring.figures import gain_intervals, version_rows

PROMOTED = datetime(2026, 1, 2, tzinfo=UTC)


def labels_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for version, role, noise, day in (
        ("2", "champion", 10.0, 1),  # v2 as champion before the promotion
        ("3", "champion", 20.0, 3),  # v3 since the promotion: worse
        ("4", "shadow", 5.0, 3),  # the challenger, shadowing: better
    ):
        truth = rng.normal(100, 30, 400)
        for t, p in zip(truth, truth + rng.normal(0, noise, 400), strict=True):
            rows.append(
                {
                    "model_version": version,
                    "role": role,
                    "timestamp": pd.Timestamp(datetime(2026, 1, day, 12, tzinfo=UTC)),
                    "prediction": float(p),
                    "label": float(t),
                }
            )
    return pd.DataFrame(rows)


VERSIONS = {
    CHAMPION: ("3", ("champion",), PROMOTED),
    CHALLENGER: ("4", ("challenger", "shadow"), None),
    PREVIOUS: ("2", ("champion", "challenger", "shadow"), None),
}


def test_version_rows_filter_by_version_role_and_time() -> None:
    labels = labels_frame()
    assert len(version_rows(labels, "3", ("champion",), PROMOTED)) == 400
    assert len(version_rows(labels, "2", ("champion",), PROMOTED)) == 0  # before it
    assert len(version_rows(labels, "4", ("champion",))) == 0  # a shadow, not an answer
    assert version_rows(labels, None, ("champion",)).empty


def test_intervals_say_the_challenger_is_better_and_the_champion_worse() -> None:
    challenger, champion = gain_intervals(
        labels_frame(), "regression", False, 0.9, 0, VERSIONS, previous_figure=None
    )
    assert challenger is not None and challenger[0] > 0.5  # rmse ~5 vs ~20: +75 %
    assert champion is not None and champion[1] < -0.5  # rmse ~20 vs ~10: -100 %


def test_a_previous_without_live_rows_is_judged_by_its_figure() -> None:
    labels = labels_frame()
    labels = labels[labels["model_version"] != "2"]
    _, champion = gain_intervals(labels, "regression", False, 0.9, 0, VERSIONS, 20.0)
    assert champion is not None and champion[0] < 0 < champion[1]  # ~20 vs 20: unsure
    _, none = gain_intervals(labels, "regression", False, 0.9, 0, VERSIONS, None)
    assert none is None
