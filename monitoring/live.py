"""Live metrics when labels are late or partial: how sure is a comparison of two versions?

With every prediction labelled, two live metrics compare directly. With 10 % labelled, a
challenger that looks 8 % better may be noise. `gain_interval` bootstraps the relative
gain of a candidate over a baseline (each resampled from its own labelled rows) and
returns the central interval at the requested confidence: the policy then promotes or
rolls back only when the whole interval clears the margin.

Bounded cost: each side is resampled from at most `max_rows` of its rows (a random subset
beyond that: the interval is then a little wider than the whole sample's, never narrower),
in chunks, so a million labelled rows cost what 20,000 do.

Pure numpy: no Evidently, no sklearn in the loop (macro F1 is computed per resample from
class counts, as sklearn's ``f1_score(average="macro", zero_division=0)`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LabelledRows:
    """One version's labelled predictions (labels and predictions aligned)."""

    labels: Sequence[Any]
    predictions: Sequence[Any]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class GainInterval:
    """The relative gain (positive = candidate better) at `level` confidence."""

    low: float
    high: float
    level: float
    resamples: int
    candidate_rows: int
    baseline_rows: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "resamples": self.resamples,
            "candidate_rows": self.candidate_rows,
            "baseline_rows": self.baseline_rows,
        }


def gain_interval(
    candidate: LabelledRows,
    baseline: LabelledRows | float,
    task: str,
    higher_is_better: bool,
    level: float = 0.9,
    resamples: int = 1000,
    seed: int = 0,
    max_rows: int = 20_000,
) -> GainInterval | None:
    """Bootstrap interval of the candidate's relative gain over the baseline.

    `baseline` is the other version's labelled rows (resampled too) or a fixed figure
    (e.g. the previous champion's holdout metric, when it has no live rows). None when
    either side has no usable row.
    """
    if not 0 < level < 1:
        raise ValueError(f"level is a confidence between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    cand = _resampled_metric(candidate, task, resamples, rng, max_rows)
    if cand is None:
        return None
    if isinstance(baseline, LabelledRows):
        base = _resampled_metric(baseline, task, resamples, rng, max_rows)
        if base is None:
            return None
        base_rows = len(baseline)
    else:
        base = np.full(resamples, float(baseline))
        base_rows = 0
    diff = cand - base if higher_is_better else base - cand
    with np.errstate(divide="ignore", invalid="ignore"):  # as policy.relative_gain
        gain = np.where(
            base == 0, np.where(diff == 0, 0.0, np.copysign(np.inf, diff)), diff / np.abs(base)
        )
    tail = (1 - level) / 2
    low, high = np.quantile(gain, [tail, 1 - tail])
    return GainInterval(float(low), float(high), level, resamples, len(candidate), base_rows)


_CHUNK_CELLS = 4_000_000  # resample indices held at once (32 MB of int64)


def _resampled_metric(
    rows: LabelledRows, task: str, resamples: int, rng: np.random.Generator, max_rows: int
) -> np.ndarray | None:
    """The primary metric (rmse | macro F1) of `resamples` bootstrap samples of `rows`."""
    if task == "regression":
        truth = pd.to_numeric(pd.Series(list(rows.labels)), errors="coerce").to_numpy(float)
        pred = pd.to_numeric(pd.Series(list(rows.predictions)), errors="coerce").to_numpy(float)
        keep = np.isfinite(truth) & np.isfinite(pred)
        squared = _at_most((truth[keep] - pred[keep]) ** 2, max_rows, rng)
        if squared.size == 0:
            return None
        return np.concatenate(
            [np.sqrt(squared[idx].mean(axis=1)) for idx in _chunks(squared.size, resamples, rng)]
        )
    pairs = [(str(t), str(p)) for t, p in zip(rows.labels, rows.predictions, strict=True)]
    pairs = [(t, p) for t, p in pairs if t not in ("", "nan", "None") and p not in ("nan", "None")]
    if not pairs:
        return None
    classes = {name: i for i, name in enumerate(sorted({v for pair in pairs for v in pair}))}
    codes = _at_most(np.array([(classes[t], classes[p]) for t, p in pairs]), max_rows, rng)
    truth, pred = codes[:, 0], codes[:, 1]
    return np.concatenate(
        [
            macro_f1(truth[idx], pred[idx], len(classes))
            for idx in _chunks(truth.size, resamples, rng)
        ]
    )


def _at_most(values: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """`values`, or a random `max_rows` of them (without replacement)."""
    if len(values) <= max_rows:
        return values
    return values[rng.choice(len(values), size=max_rows, replace=False)]


def _chunks(n: int, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap index matrices (resamples × n) in chunks of bounded size."""
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    return [
        rng.integers(0, n, size=(min(per_chunk, resamples - start), n))
        for start in range(0, resamples, per_chunk)
    ]


def macro_f1(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 of each row of two (samples × rows) class-code arrays.

    As sklearn's ``f1_score(average="macro", zero_division=0)``: the mean over the classes
    that occur in that sample's labels or predictions.
    """
    f1_sum = np.zeros(truth.shape[0])
    present = np.zeros(truth.shape[0])
    for c in range(n_classes):
        is_t, is_p = truth == c, pred == c
        tp = (is_t & is_p).sum(axis=1)
        fp = (~is_t & is_p).sum(axis=1)
        fn = (is_t & ~is_p).sum(axis=1)
        denominator = 2 * tp + fp + fn
        seen = denominator > 0
        f1_sum += np.where(seen, 2 * tp / np.maximum(denominator, 1), 0.0)
        present += seen
    return f1_sum / np.maximum(present, 1)
