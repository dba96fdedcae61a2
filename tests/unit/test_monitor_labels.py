"""Labels late, partial or never, as the monitor sees them: coverage and delay per version,
live metrics on matured predictions only, and promotion on a partially labelled window
only when the bootstrap interval clears the margin (recorded in the history).

Real parts where they are cheap: a SQLite prediction log, a throwaway SQLite MLflow
store (no server), Evidently and the Qdrant Edge OOD index. Only Prefect's event
emission is replaced (no Prefect server in unit tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from config.names import CHALLENGER, CHAMPION
from config.settings import Settings
from monitoring.figures import label_figure_values
from monitoring.policy import Action
from monitoring.report import numeric_figures
from pipelines.monitor import (
    act,
    conclude,
    measure,
    read_registry,
    read_window,
)
from predlog.log import FeedbackRecord, PredictionLog
from registry import Registry

Monitored = Callable[..., tuple[Settings, Registry]]  # the `monitored` fixture (conftest)

FEATURES = ["x1", "x2"]


# -- label coverage and delay, by aggregate SQL --------------------------------------------


def test_label_figures_give_coverage_and_delay_per_version(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db")
    t0 = 1_000_000.0
    rows, labels = [], []
    for i in range(100):  # v1 answers, v2 shadows every request
        rid = f"r{i}"
        rows.append((rid, None, t0 + i, "m", "1", "champion", {"x1": 1.0}, 1.0, 1.0))
        rows.append((rid, None, t0 + i, "m", "2", "shadow", {"x1": 1.0}, 1.0, 1.0))
        if i < 40:  # the first 40 requests get a label i seconds after their prediction
            labels.append(FeedbackRecord(rid, "m", 1.0, t0 + i + (i + 1)))
    rows.append(("other", None, t0, "n", "1", "champion", {"x1": 1.0}, 1.0, 1.0))
    labels.append(FeedbackRecord("r0", "m", 2.0, t0 + 500))  # a later label: does not count
    log.append(rows=rows, feedback=labels)

    bounds = log.window("m")
    figures = {f.model_version: f for f in log.label_figures(bounds)}
    assert set(figures) == {"1", "2"}
    one, two = figures["1"], figures["2"]
    assert (one.rows, one.matured_rows, one.labelled_rows, one.labels) == (100, 100, 40, 40)
    assert one.rows_by_role == {"champion": 100} and two.rows_by_role == {"shadow": 100}
    assert one.coverage == pytest.approx(0.40) and two.coverage == pytest.approx(0.40)
    # Delays 1..40 s: nearest-rank median is the 20th, the 90th percentile the 36th.
    assert (one.delay_p50_s, one.delay_p90_s) == (20.0, 36.0)
    assert (two.delay_p50_s, two.delay_p90_s) == (20.0, 36.0)

    # Matured = logged at or before t0 + 49: 50 rows, of which the 40 labelled ones.
    matured = {f.model_version: f for f in log.label_figures(bounds, matured_before=t0 + 49)}
    assert (matured["1"].matured_rows, matured["1"].labelled_rows) == (50, 40)
    assert matured["1"].coverage == pytest.approx(0.80)
    assert matured["1"].labels == 40  # delays still over every label

    # From the labelled rows the monitor read already: the same figures, no second read.
    for cutoff in (None, t0 + 49):
        assert log.label_figures(
            bounds, matured_before=cutoff, labelled=log.labelled(bounds)
        ) == log.label_figures(bounds, matured_before=cutoff)

    nothing = log.label_figures(log.window("n"))
    assert [(f.model_version, f.labels, f.coverage, f.delay_p50_s) for f in nothing] == [
        ("1", 0, 0.0, None)
    ]
    assert log.label_figures(log.window("nobody")) == []
    log.close()


def test_label_figures_split_a_role_between_versions_and_bound_the_labels(
    tmp_path: Path,
) -> None:
    """A promotion inside the window: the champion role holds v1 then v3 (counted by
    version); above `max_labels` labels a 1-in-k sample is joined and scaled by k."""
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db")
    t0 = 1_000_000.0
    rows, labels = [], []
    for i in range(400):
        version = "1" if i < 100 else "3"
        rid = f"r{i}"
        rows.append((rid, None, t0 + i, "m", version, "champion", {"x1": 1.0}, 1.0, 1.0))
        if i % 2 == 0:  # half of each version's requests labelled, 10 s later
            labels.append(FeedbackRecord(rid, "m", 1.0, t0 + i + 10))
    log.append(rows=rows, feedback=labels)
    bounds = log.window("m")

    exact = {f.model_version: f for f in log.label_figures(bounds)}
    assert exact["1"].rows_by_role == {"champion": 100} and exact["1"].labelled_rows == 50
    assert exact["3"].rows_by_role == {"champion": 300} and exact["3"].labelled_rows == 150
    assert exact["3"].delay_p90_s == 10.0 and exact["3"].labels_every == 1

    sampled = {f.model_version: f for f in log.label_figures(bounds, max_labels=50)}
    assert sampled["3"].labels_every == 4  # 200 labels, at most 50 joined
    assert sampled["3"].rows == 300  # rows are exact counts, never sampled
    assert 100 <= sampled["3"].labelled_rows <= 200  # about 150: 1 in 4, scaled by 4
    assert sampled["3"].delay_p50_s == 10.0
    assert log.label_figures(
        bounds, max_labels=50, labelled=log.labelled(bounds, max_labels=50)
    ) == log.label_figures(bounds, max_labels=50)
    log.close()


def test_sampled_labels_come_in_blocks_and_scale_their_counts(tmp_path: Path) -> None:
    """Above `max_labels` the labels joined are blocks of consecutive labels, one block in
    every k, spread over the window; coverage is scaled back by k."""
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db")
    t0 = 1_000_000.0
    rows = [
        (f"r{i}", None, t0 + i, "m", "1", "champion", {"x1": 1.0}, 1.0, 1.0) for i in range(4_000)
    ]
    labels = [FeedbackRecord(f"r{i}", "m", 1.0, t0 + i + 5) for i in range(0, 4_000, 2)]
    log.append(rows=rows, feedback=labels)
    bounds = log.window("m")
    labelled = log.labelled(bounds, max_labels=600)  # 2,000 labels: k = 4, blocks of 2
    assert labelled.every == 4
    stamps = np.sort(labelled.rows["timestamp"].map(pd.Timestamp.timestamp).to_numpy() - t0)
    assert 400 <= len(stamps) <= 600
    gaps = np.diff(stamps)
    assert set(np.unique(gaps)) == {2.0, 14.0}  # pairs of labels, 4 pairs apart
    (figures,) = log.label_figures(bounds, max_labels=600, labelled=labelled)
    assert figures.labels_every == 4 and 1_800 <= figures.labelled_rows <= 2_200
    log.close()


def test_label_figure_values_name_each_alias() -> None:
    summary = {
        "3": {"coverage": 0.1, "delay_p50_s": 30.0, "delay_p90_s": 50.0, "aliases": ["champion"]},
        "4": {"coverage": None, "delay_p50_s": None, "delay_p90_s": None, "aliases": []},
    }
    assert label_figure_values(summary) == {
        "champion_label_coverage": 0.1,
        "champion_label_delay_p50_s": 30.0,
        "champion_label_delay_p90_s": 50.0,
    }


def test_intervals_become_low_and_high_figures() -> None:
    figures = {"challenger_gain_interval": [0.1, 0.3], "window_rows": 5, "x": None, "ok": True}
    assert numeric_figures(figures) == {
        "challenger_gain_interval_low": 0.1,
        "challenger_gain_interval_high": 0.3,
        "window_rows": 5.0,
    }


# -- the monitor on a partially labelled window ----------------------------------------------


def log_shadowed_traffic(
    settings: Settings,
    requests: int,
    labelled_share: float,
    t0: float,
    champion_factor: float = 1.25,
    seed: int = 0,
) -> None:
    """`requests` answered by v1 and shadowed by v2, a share of them labelled 30 s later.

    v2's error on each request is r, v1's is `champion_factor` × r: on ANY subset of rows
    v1's RMSE is exactly `champion_factor` × v2's, so the point gain is the same whatever
    is labelled; only the number of labels changes how sure it is.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, requests), rng.normal(5, 2, requests)
    truth = 100 + 10 * x1
    residual = rng.normal(0, 10, requests)
    labelled = rng.random(requests) < labelled_share
    rows, labels = [], []
    name = settings.model_name
    for i in range(requests):
        rid, ts = f"{name}-{seed}-{i}", t0 + i * 0.01
        features = {"x1": float(x1[i]), "x2": float(x2[i])}
        champ = float(truth[i] + champion_factor * residual[i])
        rows.append((rid, None, ts, name, "1", "champion", features, champ, 1.0))
        shadow = float(truth[i] + residual[i])
        rows.append((rid, None, ts, name, "2", "shadow", features, shadow, 1.0))
        if labelled[i]:
            labels.append(FeedbackRecord(rid, name, float(truth[i]), ts + 30.0))
    log = PredictionLog(settings.resolved_prediction_log_url())
    log.append(rows=rows, feedback=labels)
    log.close()


def run_check(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, str | None]:
    """One check as `monitor_flow` runs it (read, measure, decide, act), without Prefect."""
    monkeypatch.setattr("prefect.events.emit_event", lambda *a, **k: None)
    state = read_registry.fn(settings)
    window = read_window.fn(settings, settings.monitor_window_rows)
    figures, result = measure.fn(settings, window, state)
    decision = conclude(settings, figures, result)
    acted = None
    if decision.action != Action.NONE:
        acted = act.fn(settings, decision, window, state, "check-under-test")
    return decision, result, acted


def test_ten_percent_labels_promote_when_the_interval_clears_the_margin(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, registry = monitored("partial-many", monitor_window_rows=5_000, min_labelled_rows=20)
    log_shadowed_traffic(settings, 5_000, labelled_share=0.10, t0=time.time() - 3_600)

    decision, result, acted = run_check(settings, monkeypatch)

    figures = result.figures
    assert 0.08 < figures["champion_label_coverage"] < 0.12  # about 10 % labelled
    assert figures["challenger_label_coverage"] == figures["champion_label_coverage"]
    assert figures["champion_label_delay_p50_s"] == pytest.approx(30.0, abs=0.01)
    low, high = figures["challenger_gain_interval"]
    assert decision.action == Action.PROMOTE, decision.reason
    assert low >= settings.live_promotion_margin and low < 0.2 < high  # point gain: 20 %
    assert acted is not None and acted.startswith("promoted")
    assert registry.aliases()[CHAMPION] == "2"
    # The interval is in the recorded decision: what `driftloop history` prints and keeps.
    move = registry.history.list(limit=1)[0]
    assert move.action == "promote"
    assert f"[{low:+.1%}, {high:+.1%}] clears the margin" in move.reason
    assert move.figures["challenger_gain_interval_low"] == pytest.approx(low)
    assert move.figures["challenger_gain_interval_high"] == pytest.approx(high)
    assert move.figures["champion_label_coverage"] == pytest.approx(
        figures["champion_label_coverage"]
    )


def test_the_same_gain_on_too_few_labels_does_not_promote(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, registry = monitored("partial-few", monitor_window_rows=5_000, min_labelled_rows=20)
    log_shadowed_traffic(settings, 300, labelled_share=0.10, t0=time.time() - 3_600)

    decision, result, acted = run_check(settings, monkeypatch)

    figures = result.figures
    assert figures["challenger_labelled_rows"] >= 20  # enough rows: the interval decides
    champion, challenger = figures["champion_metric"], figures["challenger_metric"]
    assert champion == pytest.approx(1.25 * challenger)  # the same 20 % point gain
    low, high = figures["challenger_gain_interval"]
    assert low < settings.live_promotion_margin < high
    assert decision.action != Action.PROMOTE
    assert "does not clear the 5% promotion margin" in decision.reason + " ".join(decision.notes)
    assert registry.aliases()[CHAMPION] == "1"
    assert acted is None or not acted.startswith("promoted")


def test_live_metrics_use_only_matured_predictions(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Young predictions (younger than label_delay_s) neither enter the live metrics nor
    dilute the coverage, labelled or not."""
    settings, _ = monitored(
        "matured",
        monitor_window_rows=10_000,
        min_labelled_rows=20,
        label_delay_s=600.0,
    )
    now = time.time()
    # Matured: 1,000 requests an hour ago, 20 % labelled, v1 25 % worse than v2.
    log_shadowed_traffic(settings, 1_000, labelled_share=0.2, t0=now - 3_600, seed=1)
    # Young: 1,000 requests a minute ago, 2 % labelled, and here v1 is 3x worse.
    log_shadowed_traffic(
        settings, 1_000, labelled_share=0.02, t0=now - 60, champion_factor=3.0, seed=2
    )

    _, result, _ = run_check(settings, monkeypatch)

    figures = result.figures
    assert figures["champion_metric"] == pytest.approx(1.25 * figures["challenger_metric"])
    labels = result.labels["1"]
    assert (labels["rows"], labels["matured_rows"]) == (2_000, 1_000)
    assert 0.17 < labels["coverage"] < 0.23  # of the matured rows, not diluted to ~11 %
    assert labels["labels"] > labels["labelled_rows"]  # the young labels are left out
    assert any("matured predictions only" in m for m in result.messages)


# -- windows per model and per role ----------------------------------------------------------


def log_canary_traffic(settings: Settings, requests: int, canary_every: int, t0: float) -> None:
    """Every `canary_every`-th request answered by v2 (canary, features shifted by +50 so
    they stand out), the others by v1 and shadowed by v2; every request labelled."""
    rows, labels = [], []
    name = settings.model_name
    rng = np.random.default_rng(3)
    for i in range(requests):
        rid, ts = f"{name}-{i}", t0 + i * 0.01
        x1, x2 = float(rng.normal(0, 1)), float(rng.normal(5, 2))
        truth = 100 + 10 * x1
        if i % canary_every == 0:
            features = {"x1": x1 + 50, "x2": x2}
            rows.append((rid, None, ts, name, "2", "challenger", features, truth + 1, 1.0))
        else:
            features = {"x1": x1, "x2": x2}
            rows.append((rid, None, ts, name, "1", "champion", features, truth + 4, 1.0))
            rows.append((rid, None, ts, name, "2", "shadow", features, truth + 1, 1.0))
        labels.append(FeedbackRecord(rid, name, truth, ts + 5.0))
    log = PredictionLog(settings.resolved_prediction_log_url())
    log.append(rows=rows, feedback=labels)
    log.close()


def test_the_champions_drift_window_is_its_own_answers(monitored: Monitored) -> None:
    settings, _ = monitored("roles-drift", monitor_window_rows=1_000)
    log_canary_traffic(settings, 1_500, canary_every=5, t0=time.time() - 600)

    window = read_window.fn(settings, settings.monitor_window_rows)
    assert window.requests == 1_000  # requests: shadow duplicates never count
    assert window.bounds.rows_by_role == {"champion": 800, "challenger": 200, "shadow": 800}
    assert window.champion_rows == 800 and len(window.sample) == 800
    assert set(window.sample["role"]) == {"champion"} and set(window.sample["model_version"]) == {
        "1"
    }
    assert window.sample["x1"].max() < 25  # no canary request (shifted by +50) in it
    figures, result = measure.fn(settings, window, read_registry.fn(settings))
    assert result.drift is not None and result.drift["n_current_rows"] == 800
    assert result.ood is not None and result.ood["n_rows"] == 800
    assert figures.drift_share == 0.0  # the canary's shifted features are not the champion's


def test_the_challengers_live_metric_is_its_canary_and_shadow_rows(monitored: Monitored) -> None:
    settings, _ = monitored("roles-live", monitor_window_rows=1_000)
    log_canary_traffic(settings, 1_000, canary_every=5, t0=time.time() - 600)

    window = read_window.fn(settings, settings.monitor_window_rows)
    figures, result = measure.fn(settings, window, read_registry.fn(settings))
    assert (figures.champion_labelled_rows, figures.champion_metric) == (800, pytest.approx(4.0))
    assert (figures.challenger_labelled_rows, figures.challenger_metric) == (
        1_000,  # 200 canary answers + 800 shadow rows
        pytest.approx(1.0),
    )
    assert result.labels["1"]["rows_by_role"] == {"champion": 800}
    assert result.labels["2"]["rows_by_role"] == {"challenger": 200, "shadow": 800}
    assert result.labels["2"]["aliases"] == [CHALLENGER]
    assert result.labels["2"]["coverage"] == 1.0
