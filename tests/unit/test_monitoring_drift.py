"""Drift through Evidently on the bundled Bikeshare data and small synthetic frames."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import (
    DriftResult,
    measure_drift,
    measure_performance,
    save_report,
)

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


@pytest.fixture(scope="module")
def bikeshare() -> pd.DataFrame:
    return pd.read_csv(BUNDLED)


@pytest.fixture(scope="module")
def winter_vs_rest(bikeshare: pd.DataFrame) -> tuple[DriftResult, object]:
    winter = bikeshare[bikeshare["mnth"].isin(["Jan", "Feb", "Mar"])]
    rest = bikeshare.drop(winter.index)
    return measure_drift(rest, winter, FEATURES, CATEGORICAL, prediction_column="bikers")


def test_random_halves_do_not_drift(bikeshare: pd.DataFrame) -> None:
    shuffled = bikeshare.sample(frac=1.0, random_state=1)
    half = len(shuffled) // 2
    result, _ = measure_drift(
        shuffled.iloc[:half], shuffled.iloc[half:], FEATURES, CATEGORICAL, "bikers"
    )
    assert not result.dataset_drift
    assert result.drift_share < 0.2
    assert result.prediction_drift is not None
    assert not result.prediction_drift.drifted
    assert not result.sampled
    assert result.feature_count == 12


def test_january_to_march_drifts_against_the_rest(
    winter_vs_rest: tuple[DriftResult, object],
) -> None:
    result, run = winter_vs_rest
    assert result.dataset_drift
    assert result.drift_share >= 0.5
    assert {"temp", "atemp", "mnth", "season"} <= set(result.drifted_features)
    assert result.prediction_drift is not None and result.prediction_drift.drifted
    # Our share agrees with Evidently's own count of drifted columns.
    (count,) = [
        m["value"]
        for m in run.dict()["metrics"]  # type: ignore[attr-defined]
        if m["config"]["type"] == "evidently:metric_v2:DriftedColumnsCount"
    ]
    assert (int(count["count"]), float(count["share"])) == (
        len(result.drifted_features),
        pytest.approx(result.drift_share),
    )
    temp = result.per_feature["temp"]
    assert temp.method.startswith("Wasserstein")  # > 1,000 reference rows: a distance
    assert temp.threshold is not None and temp.score >= temp.threshold


def test_results_are_read_by_column_not_position(
    bikeshare: pd.DataFrame, winter_vs_rest: tuple[DriftResult, object]
) -> None:
    winter = bikeshare[bikeshare["mnth"].isin(["Jan", "Feb", "Mar"])]
    rest = bikeshare.drop(winter.index)
    reordered, _ = measure_drift(
        rest, winter, list(reversed(FEATURES)), CATEGORICAL, prediction_column="bikers"
    )
    expected, _ = winter_vs_rest
    for name, drift in expected.per_feature.items():
        assert reordered.per_feature[name].score == pytest.approx(drift.score)
        assert reordered.per_feature[name].drifted == drift.drifted


def test_sampling_bounds_each_side_deterministically(bikeshare: pd.DataFrame) -> None:
    winter = bikeshare[bikeshare["mnth"].isin(["Jan", "Feb", "Mar"])]
    first, _ = measure_drift(bikeshare, winter, FEATURES, CATEGORICAL, max_rows=500, seed=3)
    again, _ = measure_drift(bikeshare, winter, FEATURES, CATEGORICAL, max_rows=500, seed=3)
    assert first.sampled
    assert (first.n_reference, first.n_current) == (500, 500)
    assert first.n_current_rows == len(winter)
    assert first.per_feature == again.per_feature
    assert first.per_feature["temp"].method.startswith("K-S")  # <= 1,000 rows: a p-value


def synthetic(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(loc=shift, size=n),
            "y": rng.uniform(size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "pred": rng.normal(size=n),
        }
    )


def test_a_shifted_synthetic_feature_drifts_alone() -> None:
    result, _ = measure_drift(
        synthetic(600, 0.0, 1), synthetic(400, 1.0, 2), ["x", "y", "colour"], ["colour"], "pred"
    )
    assert result.drifted_features == ("x",)
    assert result.drift_share == pytest.approx(1 / 3)
    assert not result.dataset_drift
    x = result.per_feature["x"]
    assert x.method.startswith("K-S") and x.score < 0.05


def test_nans_and_unseen_categories_in_current_do_not_crash() -> None:
    current = synthetic(400, 0.0, 2)
    current.loc[:50, "x"] = np.nan
    current.loc[:30, "colour"] = None
    current.loc[100:250, "colour"] = "purple"  # never seen in the reference
    current["y"] = current["y"].astype(object)
    current.loc[5, "y"] = "n/a"  # unparseable number -> missing
    result, _ = measure_drift(
        synthetic(600, 0.0, 1), current, ["x", "y", "colour"], ["colour"], "pred"
    )
    assert "colour" in result.drifted_features
    assert "x" not in result.drifted_features


def test_a_feature_missing_from_the_whole_window_counts_as_drifted() -> None:
    current = synthetic(300, 0.0, 2)
    current["y"] = np.nan
    result, _ = measure_drift(synthetic(600, 0.0, 1), current, ["x", "y", "colour"], ["colour"])
    assert result.per_feature["y"].drifted
    assert result.per_feature["y"].method == "all values missing"
    assert math.isnan(result.per_feature["y"].score)
    assert result.to_dict()["per_feature"]["y"]["score"] is None
    json.dumps(result.to_dict())


def test_integer_categories_with_missing_values_are_not_new_categories() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"hr": rng.integers(0, 24, size=2_000), "x": rng.normal(size=2_000)})
    current = pd.DataFrame({"hr": rng.integers(0, 24, size=500), "x": rng.normal(size=500)})
    as_int, _ = measure_drift(reference, current, ["hr", "x"], ["hr"])
    current["hr"] = current["hr"].astype(float)
    current.loc[:10, "hr"] = np.nan  # pandas turns the codes into 3.0, 7.0, ...
    as_float, _ = measure_drift(reference, current, ["hr", "x"], ["hr"])
    assert as_float.per_feature["hr"].method == "Jensen-Shannon distance"
    assert not as_float.per_feature["hr"].drifted
    assert as_float.per_feature["hr"].score == pytest.approx(
        as_int.per_feature["hr"].score, abs=0.01
    )


def test_empty_current_window_is_a_clear_error() -> None:
    empty = synthetic(0, 0.0, 1)
    with pytest.raises(ValueError, match="current window is empty"):
        measure_drift(synthetic(100, 0.0, 1), empty, ["x"], [])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": ["x", "nope"]}, r"lacks column\(s\) \['nope'\]"),
        ({"features": []}, "no features"),
        ({"features": ["x", "pred"], "prediction_column": "pred"}, "also listed as a feature"),
        ({"features": ["x"], "categorical": ["colour"]}, "not among the features"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"categorical": [], **kwargs}
    with pytest.raises(ValueError, match=match):
        measure_drift(synthetic(50, 0.0, 1), synthetic(50, 0.0, 2), **args)  # type: ignore[arg-type]


def test_save_report_writes_html_and_json(
    tmp_path: Path, winter_vs_rest: tuple[DriftResult, object]
) -> None:
    _, run = winter_vs_rest
    html_path, json_path = save_report(run, tmp_path / "reports")  # type: ignore[arg-type]
    assert html_path.read_text(encoding="utf-8").lstrip().lower().startswith("<")
    assert html_path.stat().st_size > 10_000
    types = {m["config"]["type"] for m in json.loads(json_path.read_text())["metrics"]}
    assert "evidently:metric_v2:ValueDrift" in types


def test_the_saved_page_is_evidentlys_own_and_the_run_loads_again(
    tmp_path: Path, winter_vs_rest: tuple[DriftResult, object]
) -> None:
    """`save_report` builds the page from the run's one conversion to data: byte for byte
    what Evidently's `save_html` writes, but for the random ids it draws per page (the
    dashboard's and the widgets group's)."""
    import re

    from evidently.core.report import Snapshot

    from monitoring.drift import report_run_file

    _, run = winter_vs_rest
    html_path, json_path = save_report(run, tmp_path / "mine")  # type: ignore[arg-type]
    theirs = tmp_path / "theirs.html"
    run.save_html(str(theirs))  # type: ignore[attr-defined]

    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

    def without_ids(text: str) -> str:
        text = re.sub(r"metric_[0-9a-f]{32}", "metric_ID", text)
        group = rf'"type": "group", "title": "", "size": 2, "id": "{uuid}"'
        return re.sub(group, '"type": "group", "id": "GROUP"', text)

    mine = html_path.read_text(encoding="utf-8")
    assert re.search(r"metric_[0-9a-f]{32}", mine)
    assert without_ids(mine) == without_ids(theirs.read_text(encoding="utf-8"))
    loaded = Snapshot.load(str(report_run_file(json_path)))
    assert len(loaded.dict()["metrics"]) == len(run.dict()["metrics"])  # type: ignore[attr-defined]


# -- performance -----------------------------------------------------------------------------


def test_regression_performance_skips_rows_without_labels() -> None:
    result = measure_performance([3.0, None, 5.0, float("nan")], [1.0, 2.0, 5.0, 4.0], "regression")
    assert result.n_labelled == 2
    assert result.metrics["rmse"] == pytest.approx(math.sqrt(2.0))
    assert result.metrics["mae"] == pytest.approx(1.0)
    assert result.value == result.metrics["rmse"]
    assert not result.higher_is_better


def test_classification_performance_uses_macro_f1() -> None:
    result = measure_performance([1, 0, 1, 1, None], [1.0, 0.0, 0.0, 1.0, 1.0], "classification")
    assert result.n_labelled == 4
    assert result.metrics["accuracy"] == pytest.approx(0.75)
    assert result.metrics["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert result.primary_metric == "f1_macro" and result.higher_is_better


def test_performance_without_labels_has_no_value() -> None:
    result = measure_performance([None, None], [1.0, 2.0], "regression")
    assert result.n_labelled == 0
    assert result.value is None


def test_performance_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        measure_performance([1, 2, 3], [1, 2], "regression")


def test_live_classifier_metrics_include_roc_auc_and_log_loss_when_scores_were_logged() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    from monitoring.drift import measure_performance

    labels = ["Yes", "No", "Yes", "No", "No", "Yes"]
    p_yes = [0.9, 0.2, 0.4, 0.6, 0.1, 0.8]
    scores = [{"No": 1 - p, "Yes": p} for p in p_yes]
    predicted = ["Yes" if p >= 0.5 else "No" for p in p_yes]
    result = measure_performance(labels, predicted, "classification", scores=scores)
    assert result.metrics["roc_auc"] == pytest.approx(
        roc_auc_score([x == "Yes" for x in labels], p_yes)
    )
    assert result.metrics["log_loss"] == pytest.approx(
        log_loss(labels, [[1 - p, p] for p in p_yes], labels=["No", "Yes"])
    )
    # rows without scores (a labels-only version) are left out of the score metrics only
    partial = measure_performance(
        labels, predicted, "classification", scores=[None, None, *scores[2:]]
    )
    assert partial.n_labelled == 6
    assert partial.metrics["roc_auc"] == pytest.approx(
        roc_auc_score([x == "Yes" for x in labels[2:]], p_yes[2:])
    )
    # no scores at all: the label metrics only
    plain = measure_performance(labels, predicted, "classification")
    assert set(plain.metrics) == {"accuracy", "f1_macro"}
    # one class labelled: no area to compute
    one = measure_performance(["Yes"] * 3, ["Yes"] * 3, "classification", scores=scores[:3])
    assert "roc_auc" not in one.metrics
