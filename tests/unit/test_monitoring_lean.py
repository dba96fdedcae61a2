"""`monitoring.lean`: the drift report drawn without plotly's object layer and counted without
Evidently's legacy recount is the same report: every metric value, test, widget and chart,
and the same drift decisions, as Evidently's own path (issue #19)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import monitoring.lean as lean
from monitoring.drift import DriftResult, measure_drift

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"
FEATURES = [
    "season",
    "mnth",
    "day",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
]
CATEGORICAL = ["season", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit"]
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def bikeshare() -> pd.DataFrame:
    return pd.read_csv(BUNDLED)


def _both(
    monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any
) -> tuple[tuple[DriftResult, str], tuple[DriftResult, str]]:
    """measure_drift through Evidently's own path, then through `lean_report`: each
    result and its whole run as JSON (the random ids and the timestamp normalised)."""

    def run() -> tuple[DriftResult, str]:
        from evidently.legacy.utils.numpy_encoder import NumpyEncoder

        result, report = measure_drift(*args, **kwargs)
        text = json.dumps(report.dump_dict(), cls=NumpyEncoder)  # type: ignore[attr-defined]
        text = re.sub(_UUID, "ID", text)
        return result, re.sub(r'"timestamp": "[^"]*"', '"timestamp": "T"', text)

    with monkeypatch.context() as patched:
        patched.setattr(lean, "lean_report", contextlib.nullcontext)
        theirs = run()
    return theirs, run()


def _assert_same(theirs: tuple[DriftResult, str], ours: tuple[DriftResult, str]) -> None:
    assert ours[0] == theirs[0]
    assert len(ours[1]) == len(theirs[1])
    assert ours[1] == theirs[1]


def test_the_bundled_data_gives_the_same_report(
    bikeshare: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    winter = bikeshare[bikeshare["mnth"].isin(["Jan", "Feb", "Mar"])]
    rest = bikeshare.drop(winter.index)
    theirs, ours = _both(
        monkeypatch, rest, winter, FEATURES, CATEGORICAL, prediction_column="bikers"
    )
    _assert_same(theirs, ours)
    result = ours[0]
    assert result.drift_share > 0.3 and result.prediction_drift is not None
    assert '"type": "bar"' in ours[1] and '"type": "scatter"' in ours[1]  # charts drawn
    assert '"template"' in ours[1]
    # the count metric reports the drifted columns the per-column tests found
    counts = [
        m["count"]["value"]
        for m in json.loads(ours[1])["metric_results"].values()
        if m["type"].endswith(":CountValue")
    ]
    assert counts == [len(result.drifted_features)]


def test_small_samples_and_random_halves_give_the_same_report(
    bikeshare: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    half = bikeshare.sample(frac=0.5, random_state=1)
    # 500 rows a side: K-S and chi-square (p-values) instead of distances
    _assert_same(
        *_both(
            monkeypatch,
            bikeshare.drop(half.index),
            half,
            FEATURES,
            CATEGORICAL,
            prediction_column="bikers",
            max_rows=500,
            seed=4,
        )
    )


def test_missing_infinite_and_unseen_values_give_the_same_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(7)

    def frame(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "x": rng.normal(loc=shift, size=n),
                "y": rng.uniform(size=n),
                "k": rng.integers(0, 3, size=n).astype(float),
                "colour": rng.choice(["red", "green", "blue"], size=n),
                "pred": rng.normal(size=n),
            }
        )

    reference, current = frame(3_000, 0.0), frame(2_000, 0.3)
    current.loc[:200, "x"] = np.nan
    current.loc[300:310, "y"] = np.inf
    reference.loc[:5, "y"] = -np.inf
    current.loc[:30, "colour"] = None
    current.loc[100:250, "colour"] = "purple"  # never seen in the reference
    current["k"] = 7.0  # one value only
    theirs, ours = _both(
        monkeypatch, reference, current, ["x", "y", "k", "colour"], ["colour"], "pred"
    )
    _assert_same(theirs, ours)
    assert "colour" in ours[0].drifted_features and "x" in ours[0].drifted_features


def test_a_classifier_with_scores_gives_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)

    def frame(n: int, p: float) -> pd.DataFrame:
        score = rng.beta(2, 2 / p - 2, size=n)
        return pd.DataFrame(
            {
                "x": rng.normal(size=n),
                "label": np.where(score > 0.5, "yes", "no"),
                "score": score,
            }
        )

    _assert_same(
        *_both(
            monkeypatch,
            frame(2_000, 0.5),
            frame(1_500, 0.3),
            ["x"],
            ["label"],
            prediction_column="label",
            score_column="score",
        )
    )


def test_evidentlys_functions_are_back_after_the_report() -> None:
    from evidently.legacy.metrics.data_drift import dataset_drift_metric
    from evidently.legacy.utils import visualizations
    from evidently.metrics import column_statistics

    with lean.lean_report():
        assert column_statistics.plot_distr_with_perc_button is lean.distribution_chart
        assert dataset_drift_metric.get_drift_for_columns is lean.drifted_columns
    assert column_statistics.plot_distr_with_perc_button is (
        visualizations.plot_distr_with_perc_button
    )
    assert column_statistics.plot_agg_line_data is visualizations.plot_agg_line_data
    assert dataset_drift_metric.get_drift_for_columns.__module__.startswith("evidently")


def test_other_chart_shapes_go_to_evidently() -> None:
    """A call ``ValueDrift`` does not make (two panels, JSON back) is Evidently's own."""
    from evidently.legacy.metric_results import HistogramData
    from evidently.legacy.options.color_scheme import ColorOptions

    hist = HistogramData(x=pd.Series([1.0, 2.0]), count=pd.Series([3, 4]))
    drawn = lean.distribution_chart(
        hist_curr=hist, hist_ref=hist, color_options=ColorOptions(), subplots=True
    )
    assert isinstance(drawn, dict) and len(drawn["data"]) == 4
    assert not isinstance(drawn, lean.PlainFigure)


def test_the_run_dumped_with_templates_aside_is_evidentlys_dump(bikeshare: pd.DataFrame) -> None:
    from evidently.legacy.utils.numpy_encoder import NumpyEncoder

    winter = bikeshare[bikeshare["mnth"].isin(["Jan", "Feb", "Mar"])]
    _, run = measure_drift(bikeshare.drop(winter.index), winter, FEATURES, CATEGORICAL, "bikers")
    ours = lean.dump_run(run)
    theirs = run.dump_dict()  # type: ignore[attr-defined]
    assert json.dumps(ours, cls=NumpyEncoder) == json.dumps(theirs, cls=NumpyEncoder)
    assert lean._TEMPLATE_MARK not in json.dumps(ours, cls=NumpyEncoder)
    template = lean.shared_template()
    assert json.dumps(theirs, cls=NumpyEncoder).count('"template"') >= 2 * len(FEATURES)
    # the run's own widgets got their template back
    assert lean._TEMPLATE_MARK not in json.dumps(run.dump_dict(), cls=NumpyEncoder)  # type: ignore[attr-defined]
    assert template is lean.shared_template()
