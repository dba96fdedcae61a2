"""The figures a monitor check gathers, from plain frames: no server, no MLflow, no files.

The reads the flow would do (the reference, logged scores, the OOD index) are plain
functions here, so each test says exactly what the check saw.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from monitoring.figures import (
    SCORE_COLUMN,
    Lineup,
    MonitorWindow,
    Sources,
    decision_times,
    gather_figures,
    label_figure_values,
    label_summary,
    last_rollback_time,
    live_metric,
)
from monitoring.ood import OODResult
from monitoring.report import already_judged, judged_state
from predlog.log import VersionLabels, WindowBounds

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
PROMOTED = NOW - timedelta(hours=1)
FEATURES = ["x1", "x2"]
SCHEMA = {
    "features": FEATURES,
    "categorical": [],
    "numeric": FEATURES,
    "target": "y",
    "task": "regression",
}
SETTINGS = Settings(model_name="m", seed=0, live_interval_level=0.9)


def reference_frame(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x1": rng.normal(0, 1, n), "x2": rng.normal(5, 2, n)})
    return frame.assign(prediction=100 + 10 * frame["x1"])


def sample_frame(n: int = 400, shift: float = 0.0) -> pd.DataFrame:
    """The champion's answered requests; x1 moved by `shift` standard deviations."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x1": rng.normal(shift, 1, n), "x2": rng.normal(5, 2, n)})
    return frame.assign(
        prediction=100 + 10 * frame["x1"],
        request_id=[f"r{i}" for i in range(n)],
        model_version="3",
        role="champion",
    )


def labels_frame() -> pd.DataFrame:
    """Labelled rows: champion v3 off by 2 (4 rows since its promotion, 1 before),
    challenger v4 off by 1 (2 canary + 2 shadow rows), previous v2 off by 3 (as champion
    before the promotion)."""
    rows = [
        ("3", "champion", NOW, 10.0, 12.0),
        ("3", "champion", NOW, 20.0, 18.0),
        ("3", "champion", NOW, 30.0, 32.0),
        ("3", "champion", NOW, 40.0, 38.0),
        ("3", "champion", PROMOTED - timedelta(minutes=5), 50.0, 90.0),  # before: not counted
        ("4", "challenger", NOW, 10.0, 11.0),
        ("4", "challenger", NOW, 20.0, 19.0),
        ("4", "shadow", NOW, 30.0, 31.0),
        ("4", "shadow", NOW, 40.0, 39.0),
        ("2", "champion", PROMOTED - timedelta(hours=2), 10.0, 13.0),
        ("2", "champion", PROMOTED - timedelta(hours=2), 20.0, 17.0),
    ]
    return pd.DataFrame(
        rows, columns=["model_version", "role", "timestamp", "label", "prediction"]
    ).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True))


def window_of(
    sample: pd.DataFrame, labels: pd.DataFrame | None = None, requests: int | None = None, **kw: Any
) -> MonitorWindow:
    requests = len(sample) if requests is None else requests
    bounds = WindowBounds("m", 1, requests, requests, {"champion": requests})
    labels = labels_frame() if labels is None else labels
    return MonitorWindow("sqlite://", bounds, sample, labels, **kw)


LINEUP = Lineup(
    champion="3",
    challenger="4",
    previous="2",
    challenger_created_at=NOW - timedelta(minutes=30),
    previous_holdout=2.5,
    last_promotion_at=PROMOTED,
    last_retrain_at=NOW - timedelta(minutes=40),
    aliases={"champion": "3", "challenger": "4", "previous": "2"},
)


def sources(
    reference: pd.DataFrame | None = None,
    ood_rate: float = 0.25,
    calls: list[str] | None = None,
) -> Sources:
    """Sources that record what they were asked (`calls`) and answer from plain data."""
    calls = [] if calls is None else calls

    def read_reference() -> pd.DataFrame:
        calls.append("reference")
        return reference_frame() if reference is None else reference

    def scores(sample: pd.DataFrame, positive: str) -> pd.Series:
        calls.append(f"scores {positive} {len(sample)}")
        return pd.Series(0.5, index=sample.index)

    def ood(ref: pd.DataFrame, current: pd.DataFrame) -> OODResult:
        calls.append(f"ood {list(current.columns)}")
        return OODResult(ood_rate, len(current), 3.0, sampled=False, n_rows=len(current))

    return Sources(read_reference, scores, ood)


def rmse(errors: list[float]) -> float:
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def test_a_drifted_window_gives_every_figure_the_policy_needs() -> None:
    calls: list[str] = []
    found = gather_figures(
        SETTINGS, NOW, window_of(sample_frame(shift=3.0)), SCHEMA, LINEUP, sources(calls=calls)
    )
    f = found.figures
    assert (f.window_rows, f.feature_count, f.drift_share) == (400, 2, 0.5)
    assert f.drifted_features == ("x1",) and f.dataset_drift  # 0.5 ≥ the 0.5 threshold
    assert f.prediction_drift is True  # the prediction follows x1
    assert f.ood_rate == 0.25 and found.ood is not None and found.ood.n_rows == 400
    assert found.drift is not None and found.drift_run is not None
    assert calls == ["reference", "ood ['x1', 'x2']"]  # a regressor logs no scores
    assert (f.metric_name, f.higher_is_better) == ("rmse", False)
    assert f.champion_metric == pytest.approx(2.0) and f.champion_labelled_rows == 4
    assert f.challenger_metric == pytest.approx(1.0) and f.challenger_labelled_rows == 4
    assert f.previous_metric == pytest.approx(rmse([3.0, 3.0]))  # live rows beat the holdout
    assert f.labelled_rows == 9  # answered rows (champion + challenger), shadows excluded
    assert f.challenger_gain_interval is not None and f.champion_gain_interval is not None
    assert f.interval_level == 0.9 and f.last_promotion_at == PROMOTED
    assert found.performance["challenger"] == {
        "version": "4",
        "n": 4,
        "rmse": pytest.approx(1.0),
        "mae": pytest.approx(1.0),
    }
    assert found.messages == []


def test_a_calm_window_does_not_drift() -> None:
    found = gather_figures(SETTINGS, NOW, window_of(sample_frame()), SCHEMA, LINEUP, sources())
    assert found.figures.drift_share == 0.0 and not found.figures.dataset_drift


def test_an_empty_window_reads_nothing_and_says_so() -> None:
    calls: list[str] = []
    empty = sample_frame().iloc[0:0]
    window = window_of(empty, labels_frame().iloc[0:0], requests=0)
    found = gather_figures(SETTINGS, NOW, window, SCHEMA, LINEUP, sources(calls=calls))
    assert calls == []  # no reference read, no OOD index opened
    assert found.messages == ["the window is empty: no traffic logged yet"]
    f = found.figures
    assert (f.window_rows, f.drift_share, f.ood_rate, f.champion_metric) == (0, None, None, None)
    assert f.previous_metric == 2.5  # no live rows: the previous version's holdout figure


def test_traffic_without_the_features_is_not_measured() -> None:
    found = gather_figures(
        SETTINGS, NOW, window_of(sample_frame().drop(columns="x2")), SCHEMA, LINEUP, sources()
    )
    assert found.messages == ["logged traffic lacks features ['x2']: drift not measured"]
    assert found.drift is None and found.ood is None


def test_an_ood_failure_keeps_the_drift_figures() -> None:
    def failing(ref: pd.DataFrame, current: pd.DataFrame) -> OODResult:
        raise ValueError("no index")

    broken = Sources(lambda: reference_frame(), lambda s, p: pd.Series(dtype=float), failing)
    found = gather_figures(
        SETTINGS, NOW, window_of(sample_frame(shift=3.0)), SCHEMA, LINEUP, broken
    )
    assert found.messages == ["OOD not measured: no index"]
    assert found.figures.drift_share == 0.5 and found.figures.ood_rate is None


def test_the_ood_rate_is_scored_after_the_drift_in_the_same_thread() -> None:
    """Qdrant Edge's kNN search holds the GIL, so OOD runs after the drift, not beside it
    (bench/README.md, monitoring, "Session 9"): same thread, drift first, and the
    figure and problem of each land as before."""
    import threading

    schema = {**SCHEMA, "task": "classification"}
    reference = reference_frame().assign(
        prediction=lambda f: np.where(f["x1"] > 0, "yes", "no"), **{SCORE_COLUMN: 0.5}
    )
    sample = sample_frame().assign(prediction=lambda f: np.where(f["x1"] > 0, "yes", "no"))
    lineup = Lineup(champion="3", positive_class="yes", aliases={"champion": "3"})
    order: list[tuple[str, int]] = []

    def scores(sample: pd.DataFrame, positive: str) -> pd.Series:
        order.append(("drift", threading.get_ident()))
        return pd.Series(0.5, index=sample.index)

    def ood(ref: pd.DataFrame, current: pd.DataFrame) -> OODResult:
        order.append(("ood", threading.get_ident()))
        return OODResult(0.125, len(current), 3.0, sampled=False, n_rows=len(current))

    found = gather_figures(
        SETTINGS, NOW, window_of(sample), schema, lineup, Sources(lambda: reference, scores, ood)
    )
    assert found.messages == []
    assert found.figures.ood_rate == 0.125 and found.drift is not None
    assert order == [("drift", threading.get_ident()), ("ood", threading.get_ident())]

    def failing_ood(ref: pd.DataFrame, current: pd.DataFrame) -> OODResult:
        raise ValueError("no OOD index")

    found = gather_figures(
        SETTINGS,
        NOW,
        window_of(sample),
        schema,
        lineup,
        Sources(lambda: reference, scores, failing_ood),
    )
    assert found.drift is not None and found.figures.ood_rate is None
    assert found.messages == ["OOD not measured: no OOD index"]


def test_a_binary_classifier_compares_its_logged_scores() -> None:
    schema = {**SCHEMA, "task": "classification"}
    reference = reference_frame().assign(
        prediction=lambda f: np.where(f["x1"] > 0, "yes", "no"), **{SCORE_COLUMN: 0.5}
    )
    sample = sample_frame().assign(prediction=lambda f: np.where(f["x1"] > 0, "yes", "no"))
    labels = labels_frame().assign(label="yes", prediction="yes")
    lineup = Lineup(champion="3", positive_class="yes", aliases={"champion": "3"})
    calls: list[str] = []
    window = window_of(sample, labels)
    found = gather_figures(SETTINGS, NOW, window, schema, lineup, sources(reference, calls=calls))
    # the reference, then the drift (which reads the scores), then the OOD rate
    assert calls == ["reference", "scores yes 400", "ood ['x1', 'x2']"]
    assert found.drift is not None and found.drift.score_drift is not None
    assert set(found.drift.prediction_shares["current"]) == {"no", "yes"}
    assert (found.figures.metric_name, found.figures.higher_is_better) == ("f1_macro", True)
    assert found.figures.champion_metric == 1.0  # every labelled row predicted right


def test_young_and_sampled_labels_are_said_and_scaled() -> None:
    window = window_of(
        sample_frame(), labels_every=3, matured_before=(PROMOTED - timedelta(minutes=1)).timestamp()
    )
    found = gather_figures(SETTINGS, NOW, window, SCHEMA, LINEUP, sources())
    assert found.messages == [
        "live metrics on matured predictions only (older than label_delay_s 0 s): "
        "3 of 11 labelled rows",
        "live metrics on a 1-in-3 sample of the window's labels (3 labelled rows; "
        f"`live_max_labels` {SETTINGS.live_max_labels:,})",
    ]
    f = found.figures
    assert f.champion_metric is None and f.champion_labelled_rows == 0  # all young
    assert f.labelled_rows == 27  # 9 answered labelled rows, a 1-in-3 sample


def test_live_metric_is_measured_on_the_version_roles_and_time() -> None:
    labels = labels_frame()
    value, n, details = live_metric(labels, "3", "regression", ("champion",), since=PROMOTED)
    assert (value, n) == (pytest.approx(2.0), 4) and details["mae"] == pytest.approx(2.0)
    everything, n_all, _ = live_metric(labels, "3", "regression", ("champion",))
    assert n_all == 5 and everything == pytest.approx(rmse([2, 2, 2, 2, 40]))
    assert live_metric(labels, "4", "regression", ("shadow",))[:2] == (pytest.approx(1.0), 2)
    assert live_metric(labels, "9", "regression", ("champion",)) == (None, 0, {})
    assert live_metric(labels, None, "regression", ("champion",)) == (None, 0, {})


def test_decision_times_take_the_newest_promotion_and_retrain() -> None:
    def move(action: str, minutes: int) -> SimpleNamespace:
        return SimpleNamespace(action=action, at=(NOW - timedelta(minutes=minutes)).isoformat())

    newest_first = [move("rollback", 1), move("retrain", 5), move("promote", 10)]
    newest_first += [move("promote", 60), move("retrain", 90)]
    assert decision_times(newest_first) == (
        NOW - timedelta(minutes=10),
        NOW - timedelta(minutes=5),
    )
    assert decision_times([move("rollback", 1)]) == (None, None)


def test_the_champion_counts_its_rows_from_the_rollback_that_restored_it() -> None:
    def move(action: str, minutes: int) -> SimpleNamespace:
        return SimpleNamespace(action=action, at=(NOW - timedelta(minutes=minutes)).isoformat())

    history = [move("rollback", 1), move("promote", 10), move("rollback", 60)]
    rolled_back = last_rollback_time(history)
    assert rolled_back == NOW - timedelta(minutes=1)
    assert last_rollback_time([move("promote", 10)]) is None
    lineup = Lineup("2", previous="3", last_promotion_at=NOW - timedelta(minutes=10))
    assert lineup.live_rows()["champion"][2] == NOW - timedelta(minutes=10)
    restored = replace(lineup, last_rollback_at=rolled_back)
    assert restored.live_rows()["champion"][2] == rolled_back
    # A rollback before the promotion leaves the promotion as the champion's start.
    assert replace(lineup, last_rollback_at=NOW - timedelta(hours=1)).champion_since() == (
        NOW - timedelta(minutes=10)
    )


def version_labels(version: str, labelled: int, matured: int) -> VersionLabels:
    return VersionLabels(version, {"champion": 100}, 100, matured, labelled, labelled, 30.0, 90.0)


def test_label_summary_names_the_aliases_each_version_holds() -> None:
    figures = [version_labels("3", 40, 80), version_labels("5", 0, 10)]
    summary = label_summary(figures, {"champion": "3", "canary-test": "3", "challenger": "4"})
    assert summary["3"]["aliases"] == ["canary-test", "champion"]
    assert summary["3"]["coverage"] == 0.5 and summary["5"]["aliases"] == []
    assert "4" not in summary  # no rows in the window
    assert label_figure_values(summary) == {
        "champion_label_coverage": 0.5,
        "champion_label_delay_p50_s": 30.0,
        "champion_label_delay_p90_s": 90.0,
        "canary-test_label_coverage": 0.5,
        "canary-test_label_delay_p50_s": 30.0,
        "canary-test_label_delay_p90_s": 90.0,
    }


def test_the_judged_state_changes_with_requests_labels_aliases_and_moves() -> None:
    def state(last_id: int = 9, labels: int = 4, champion: str = "3", moves: int = 1) -> dict:
        bounds = WindowBounds("m", 1, last_id, last_id, {"champion": last_id})
        window = MonitorWindow("sqlite://", bounds, pd.DataFrame(), pd.DataFrame())
        window.label_figures = [version_labels("3", labels, 9)]
        history = [SimpleNamespace(decision_id=f"d{i}", at="t") for i in range(moves)]
        versions = {"champion": SimpleNamespace(version=champion)}
        return judged_state(window, {"versions": versions, "history": history})

    first = state()
    assert first == {
        "last_id": 9,
        "requests": 9,
        "labels": {"3": 4},
        "aliases": {"champion": "3"},
        "moves": ["d0"],
    }
    last = {"at": "t0", "judged": first, "decision": {"action": "none", "reason": "calm"}}
    said = already_judged(last, state())
    assert said == (
        "nothing new since the check at t0: the same requests (newest id 9), labels and "
        "aliases, judged then: calm"
    )
    for changed in (state(last_id=10), state(labels=5), state(champion="4"), state(moves=2)):
        assert already_judged(last, changed) is None
    assert already_judged({**last, "decision": {"action": "promote"}}, first) is None
    assert already_judged({**last, "error": "registry down"}, first) is None
    assert already_judged(None, first) is None
