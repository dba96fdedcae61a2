"""The metric vocabulary the gate and the monitor share: each task's primary metric and
which way is better, and the relative gain of one figure over another."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric the gate and the monitor compare, and which way is better."""

    name: str
    higher_is_better: bool


PRIMARY_METRICS: dict[Task, PrimaryMetric] = {
    "regression": PrimaryMetric("rmse", higher_is_better=False),
    "classification": PrimaryMetric("f1_macro", higher_is_better=True),
}
"""RMSE for regression; macro F1 for classification (label-only, works for any pyfunc).

Versions registered before metric names said what they measure carry macro F1 as
``holdout_f1``; `registry.VersionInfo.holdout_metric` reads either spelling, and the gate
rescores the champion on the new holdout, so it always compares today's names."""


def primary_metric(task: str) -> PrimaryMetric:
    """The task's primary metric; any task but regression is a classification."""
    return PRIMARY_METRICS["regression" if task == "regression" else "classification"]


def relative_gain(candidate: float, baseline: float, higher_is_better: bool) -> float:
    """How much better ``candidate`` is than ``baseline``, relative to ``|baseline|``.

    Positive means better whatever the metric's direction; a zero baseline gives +/-inf
    (0 when both are equal): any change from a perfect or a zero score clears every
    margin in its direction.
    """
    diff = candidate - baseline if higher_is_better else baseline - candidate
    if baseline == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / abs(baseline)
