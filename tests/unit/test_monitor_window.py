"""The monitor's window: per model, counted in requests, sampled by the database.

Two models share one state folder (one prediction log) without mixing; shadow rows never
count toward `monitor_window_rows`; and the figures of a check on the database's sample
agree with the same check on the whole window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.settings import BUNDLED_DATA, Settings
from monitoring.figures import live_metric
from pipelines.monitor import read_window, window_of
from predlog.log import FeedbackRecord, PredictionLog


def settings_for(state: Path, model: str, **extra: object) -> Settings:
    return Settings(model_name=model, state_dir=state, **extra)


def log_traffic(
    settings: Settings,
    n: int,
    error: float,
    version: str = "1",
    shadow_version: str | None = None,
    t0: float = 1_000_000.0,
) -> None:
    """`n` answered requests with prediction = label + `error`, all labelled; a shadow row
    per request when `shadow_version` is given (prediction = label)."""
    log = PredictionLog(settings.resolved_prediction_log_url())
    name = settings.model_name
    rows, labels = [], []
    for i in range(n):
        request_id = f"{name}-{i}"
        features = {"temp": float(i % 7), "hr": i % 24}
        rows.append((request_id, None, t0 + i, name, version, "champion", features, i + error, 1.0))
        if shadow_version:
            rows.append(
                (request_id, None, t0 + i, name, shadow_version, "shadow", features, i, 1.0)
            )
        labels.append(FeedbackRecord(request_id, name, float(i), t0 + i + 0.5))
    log.append(rows=rows, feedback=labels)
    log.close()


def test_two_models_in_one_state_folder_keep_their_windows_labels_and_metrics(
    tmp_path: Path,
) -> None:
    alpha = settings_for(tmp_path, "alpha", monitor_window_rows=10_000)
    beta = settings_for(tmp_path, "beta", monitor_window_rows=10_000)
    assert alpha.resolved_prediction_log_url() == beta.resolved_prediction_log_url()
    log_traffic(alpha, 300, error=1.0)
    log_traffic(beta, 120, error=10.0, version="7", shadow_version="8")

    a = read_window.fn(alpha, alpha.monitor_window_rows)
    b = read_window.fn(beta, beta.monitor_window_rows)
    assert (a.requests, b.requests) == (300, 120)
    assert set(a.sample["request_id"].str[:5]) == {"alpha"}
    assert set(b.sample["request_id"].str[:4]) == {"beta"}
    assert set(a.labels["model_version"]) == {"1"} and len(a.labels) == 300
    assert len(b.labels) == 240  # beta's answers and its shadow rows, each labelled once
    rmse_a, n_a, _ = live_metric(a.labels, "1", "regression", ("champion",))
    rmse_b, n_b, _ = live_metric(b.labels, "7", "regression", ("champion",))
    shadow_b, n_shadow, _ = live_metric(b.labels, "8", "regression", ("challenger", "shadow"))
    assert (rmse_a, n_a) == (pytest.approx(1.0), 300)
    assert (rmse_b, n_b) == (pytest.approx(10.0), 120)
    assert (shadow_b, n_shadow) == (pytest.approx(0.0), 120)
    assert live_metric(a.labels, "7", "regression", ("champion",)) == (None, 0, {})


def test_shadow_rows_do_not_count_toward_monitor_window_rows(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "m", monitor_window_rows=50)
    log_traffic(settings, 200, error=0.0, shadow_version="2")
    window = read_window.fn(settings, settings.monitor_window_rows)
    assert window.requests == 50 and window.bounds.shadow_rows == 50
    assert len(window.sample) == 50 and set(window.sample["role"]) == {"champion"}
    assert list(window.sample["request_id"]) == [f"m-{i}" for i in range(150, 200)]


def test_window_bounds_from_arguments_and_settings(tmp_path: Path) -> None:
    plain = settings_for(tmp_path, "m", monitor_window_rows=500)
    timed = settings_for(tmp_path, "m", monitor_window_rows=500, monitor_window_s=3600)
    assert window_of(plain, None, None) == (500, None)
    assert window_of(timed, None, None) == (500, 3600)
    assert window_of(plain, 20, None) == (20, None)
    assert window_of(plain, None, 60.0) == (None, 60.0)  # --since alone: a time window
    assert window_of(plain, 20, 60.0) == (20, 60.0)


# -- the sampled check agrees with the whole-window check on the bundled data --------------

FEATURES = ["season", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit"]
FEATURES += ["temp", "atemp", "hum", "windspeed"]
CATEGORICAL = ["mnth", "weathersit"]
DRIFT_TOLERANCE = 1 / len(FEATURES)  # at most one feature's verdict differs
OOD_TOLERANCE = 0.04  # > 2 binomial standard deviations at 800 scored rows, whatever the rate
WINDOW_ROWS = 8_000  # sampled: 2,000 rows for drift, 800 for OOD


@pytest.mark.parametrize("block_rows", [None, 64])  # the default (7 rows), the bound's size
def test_sampled_check_agrees_with_the_whole_window(tmp_path: Path, block_rows: int | None) -> None:
    from monitoring.drift import measure_drift
    from monitoring.ood import EdgeOODIndex, TabularEmbedder, fit_reference, ood_rate_frame

    data = pd.read_csv(BUNDLED_DATA)
    rng = np.random.default_rng(0)
    reference = data.iloc[: int(0.8 * len(data))].sample(5_000, random_state=0)
    reference = reference.assign(prediction=reference["bikers"].astype(float))
    window = data.iloc[rng.integers(0, len(data), size=WINDOW_ROWS)].reset_index(drop=True)
    for column in ("temp", "atemp", "hum", "windspeed", "bikers"):
        window[column] = window[column] + rng.normal(
            scale=0.02 * data[column].std(), size=WINDOW_ROWS
        )
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    features = window[FEATURES].to_dict(orient="records")
    log.append(
        rows=[
            (f"r{i}", None, 1e6 + i, "bikes", "1", "champion", f, float(p), 1.0)
            for i, (f, p) in enumerate(zip(features, window["bikers"], strict=True))
        ]
    )
    bounds = log.window("bikes")
    whole = log.frame(model_name="bikes")
    sample = log.sample(bounds, max_rows=2_000, seed=1, block_rows=block_rows)
    log.close()
    assert len(whole) == WINDOW_ROWS and len(sample) == 2_000

    def check(frame: pd.DataFrame, drift_rows: int, queries: int) -> tuple[float, bool, float]:
        drift, _ = measure_drift(
            reference, frame, FEATURES, CATEGORICAL, "prediction", max_rows=drift_rows
        )
        ood = ood_rate_frame(index, ref, embedder, frame[FEATURES], max_queries=queries)
        return drift.drift_share, drift.dataset_drift, ood.rate

    with EdgeOODIndex(tmp_path / "ood") as index:
        embedder = TabularEmbedder.fit(
            reference[FEATURES], [*set(FEATURES) - set(CATEGORICAL)], CATEGORICAL
        )
        ref = fit_reference(index, "bikes", embedder.transform(reference[FEATURES]))
        full_share, full_verdict, full_ood = check(whole, 10**9, 10**9)
        share, verdict, ood = check(sample, 2_000, 800)
    print(f"drift share {share:.3f} vs {full_share:.3f}, OOD rate {ood:.4f} vs {full_ood:.4f}")
    assert 0 < full_share < 1 and 0 < full_ood < 1  # figures worth comparing
    assert abs(share - full_share) <= DRIFT_TOLERANCE + 1e-9, (share, full_share)
    assert verdict == full_verdict
    assert abs(ood - full_ood) <= OOD_TOLERANCE, (ood, full_ood)


def test_the_labelled_window_is_training_rows_of_answered_labelled_requests(
    tmp_path: Path,
) -> None:
    """Answered requests with a label become rows (features, target, source, logged at,
    request id); shadow rows and unlabelled requests do not; a schema the traffic lacks
    gives no rows but the training columns."""
    from data.live import LIVE_COLUMNS, LIVE_LOGGED_AT, LIVE_REQUEST_ID, LIVE_SOURCE
    from pipelines.monitor import labelled_window

    settings = settings_for(tmp_path, "gamma", monitor_window_rows=10_000)
    log_traffic(settings, 6, error=1.0, shadow_version="8")
    log = PredictionLog(settings.resolved_prediction_log_url())
    features = {"temp": 9.0, "hr": 1}
    log.append(
        rows=[("gamma-new", None, 1_000_100.0, "gamma", "1", "champion", features, 3.0, 1.0)]
    )
    log.close()
    window = read_window.fn(settings, settings.monitor_window_rows)
    schema = {"features": ["temp", "hr"], "target": "y"}

    rows = labelled_window(window, schema, source="live window test")
    assert list(rows.columns) == ["temp", "hr", "y", *LIVE_COLUMNS]
    assert rows["y"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the labels, not predictions
    assert rows[LIVE_REQUEST_ID].tolist() == [f"gamma-{i}" for i in range(6)]
    assert rows[LIVE_LOGGED_AT].tolist() == [1_000_000.0 + i for i in range(6)]
    assert set(rows[LIVE_SOURCE]) == {"live window test"}
    assert rows["temp"].tolist() == [float(i % 7) for i in range(6)]
    named = labelled_window(window, schema)
    assert set(named[LIVE_SOURCE]) == {"live window of gamma"}

    other = labelled_window(window, {"features": ["temp", "wind"], "target": "y"})
    assert other.empty and list(other.columns) == ["temp", "wind", "y", *LIVE_COLUMNS]
