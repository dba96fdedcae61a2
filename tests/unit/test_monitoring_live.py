"""Bootstrap intervals of a live gain: sure when the sample says so, wide when it is thin."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from monitoring.live import LabelledRows, gain_interval, macro_f1


def regression(n: int, noise: float, seed: int) -> LabelledRows:
    rng = np.random.default_rng(seed)
    truth = rng.normal(100, 20, n)
    return LabelledRows(truth.tolist(), (truth + rng.normal(0, noise, n)).tolist())


def test_a_clearly_better_candidate_has_an_interval_above_zero() -> None:
    better, worse = regression(400, 5.0, 1), regression(400, 10.0, 2)
    interval = gain_interval(better, worse, "regression", higher_is_better=False, seed=3)
    assert interval is not None
    assert 0.35 < interval.low < interval.high < 0.65  # rmse 5 vs 10: a 50 % gain
    assert (interval.candidate_rows, interval.baseline_rows, interval.level) == (400, 400, 0.9)


def test_a_thin_sample_gives_a_wide_interval_that_straddles_the_margin() -> None:
    thin = gain_interval(
        regression(15, 9.0, 4), regression(15, 10.0, 5), "regression", False, seed=6
    )
    thick = gain_interval(
        regression(2000, 9.0, 4), regression(2000, 10.0, 5), "regression", False, seed=6
    )
    assert thin is not None and thick is not None
    assert thin.high - thin.low > 3 * (thick.high - thick.low)
    assert thin.low < 0.05 < thin.high


def test_a_fixed_baseline_figure_only_resamples_the_candidate() -> None:
    interval = gain_interval(regression(300, 5.0, 7), 10.0, "regression", False, seed=8)
    assert interval is not None and interval.baseline_rows == 0
    assert 0.4 < interval.low < interval.high < 0.6


def test_classification_gain_in_macro_f1() -> None:
    rng = np.random.default_rng(9)
    truth = rng.choice(["yes", "no"], 500, p=[0.3, 0.7])
    good = np.where(rng.random(500) < 0.9, truth, np.where(truth == "yes", "no", "yes"))
    bad = np.where(rng.random(500) < 0.6, truth, np.where(truth == "yes", "no", "yes"))
    interval = gain_interval(
        LabelledRows(truth.tolist(), good.tolist()),
        LabelledRows(truth.tolist(), bad.tolist()),
        "classification",
        higher_is_better=True,
        seed=10,
    )
    assert interval is not None and interval.low > 0.2


def test_no_usable_rows_gives_no_interval() -> None:
    empty = LabelledRows([], [])
    assert gain_interval(empty, regression(10, 1.0, 1), "regression", False) is None
    nan = LabelledRows([float("nan")], [1.0])
    assert gain_interval(regression(10, 1.0, 1), nan, "regression", False) is None
    with pytest.raises(ValueError, match="confidence between 0 and 1"):
        gain_interval(regression(10, 1.0, 1), 1.0, "regression", False, level=90)


def test_macro_f1_matches_sklearn_row_by_row() -> None:
    rng = np.random.default_rng(11)
    truth = rng.integers(0, 4, size=(50, 30))
    pred = np.where(rng.random((50, 30)) < 0.5, truth, rng.integers(0, 4, size=(50, 30)))
    ours = macro_f1(truth, pred, 4)
    for row in range(50):
        expected = f1_score(truth[row], pred[row], average="macro", zero_division=0)
        assert ours[row] == pytest.approx(expected)


def test_a_million_labelled_rows_are_resampled_from_a_bounded_subset() -> None:
    big, other = regression(1_000_000, 5.0, 12), regression(1_000_000, 10.0, 13)
    bounded = gain_interval(big, other, "regression", False, seed=14, max_rows=20_000)
    smaller = gain_interval(big, other, "regression", False, seed=14, max_rows=2_000)
    assert bounded is not None and smaller is not None
    assert 0.45 < bounded.low < bounded.high < 0.55
    # fewer rows resampled: a wider interval (conservative), never a narrower one
    assert smaller.high - smaller.low > bounded.high - bounded.low
