"""The decision policy: every branch, every guard, and properties over random figures."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics import relative_gain
from monitoring.policy import Action, Decision, Figures, Thresholds, decide

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
T = Thresholds()


def quiet(**changes: object) -> Figures:
    """A healthy window: no drift, no OOD, a champion with labels and nothing waiting."""
    base = Figures(
        now=NOW,
        window_rows=1_200,
        feature_count=12,
        drift_share=0.08,
        drifted_features=("temp",),
        dataset_drift=False,
        prediction_drift=False,
        ood_rate=0.01,
        metric_name="rmse",
        higher_is_better=False,
        champion_version="3",
        champion_metric=10.0,
        champion_labelled_rows=500,
    )
    return replace(base, **changes)


def drifting(**changes: object) -> Figures:
    """Seven of twelve features drifted, the bundled January-March case."""
    features = ("temp", "atemp", "hum", "mnth", "season", "day", "windspeed")
    defaults: dict[str, object] = {
        "drift_share": 7 / 12,
        "drifted_features": features,
        "dataset_drift": True,
    }
    defaults.update(changes)
    return quiet(**defaults)


def promoted(minutes_ago: float, **changes: object) -> Figures:
    """A champion promoted ``minutes_ago`` over previous v2 (rmse 10.0)."""
    defaults: dict[str, object] = {
        "previous_version": "2",
        "previous_metric": 10.0,
        "last_promotion_at": NOW - timedelta(minutes=minutes_ago),
    }
    defaults.update(changes)
    return quiet(**defaults)


def with_challenger(metric: float, **changes: object) -> Figures:
    defaults: dict[str, object] = {
        "challenger_version": "4",
        "challenger_metric": metric,
        "challenger_labelled_rows": 300,
    }
    defaults.update(changes)
    return quiet(**defaults)


# -- nothing to do -----------------------------------------------------------------------


def test_quiet_window_does_nothing_and_says_why() -> None:
    decision = decide(quiet(), T)
    assert decision.action is Action.NONE
    assert "no drift on 1,200 rows: drift share 0.08 < 0.50, OOD rate 1.0% < 20%" in (
        decision.reason
    )
    assert "no challenger waiting" in decision.notes
    assert decision.to_version is None


def test_empty_window_with_no_figures_does_not_crash() -> None:
    figures = Figures(now=NOW)
    decision = decide(figures, T)
    assert decision.action is Action.NONE
    assert "window too small to judge drift: 0 < 200" in decision.reason


def test_missing_drift_and_ood_figures_are_reported() -> None:
    decision = decide(quiet(drift_share=None, ood_rate=None), T)
    assert decision.action is Action.NONE
    assert "no drift or OOD figures for the window of 1,200 rows" in decision.reason


def test_nan_figures_count_as_missing() -> None:
    decision = decide(quiet(drift_share=float("nan"), ood_rate=float("nan")), T)
    assert decision.action is Action.NONE
    assert "no drift or OOD figures" in decision.reason


# -- retrain -----------------------------------------------------------------------------


def test_drift_share_above_threshold_retrains_with_the_numbers() -> None:
    decision = decide(drifting(), T)
    assert decision.action is Action.RETRAIN
    assert decision.reason.startswith("drift share 0.58 ≥ 0.50 (7 of 12 features: temp, ")
    assert "+2 more" in decision.reason
    assert "on 1,200 rows" in decision.reason
    assert decision.from_version == "3"


def test_drift_share_exactly_at_threshold_retrains() -> None:
    assert decide(drifting(drift_share=6 / 12), T).action is Action.RETRAIN


def test_drift_share_just_below_threshold_does_not_retrain() -> None:
    decision = decide(drifting(drift_share=5 / 12), T)
    assert decision.action is Action.NONE
    assert "drift share 0.42 < 0.50" in decision.reason


def test_ood_rate_alone_retrains() -> None:
    decision = decide(quiet(ood_rate=0.35, drift_share=None), T)
    assert decision.action is Action.RETRAIN
    assert decision.reason == "OOD rate 35.0% ≥ 20% on 1,200 rows"


def test_drift_on_a_too_small_window_is_not_judged() -> None:
    decision = decide(drifting(window_rows=150), T)
    assert decision.action is Action.NONE
    assert "window too small to judge drift: 150 < 200" in decision.reason


def test_window_exactly_at_min_rows_is_judged() -> None:
    assert decide(drifting(window_rows=200), T).action is Action.RETRAIN


def test_prediction_drift_is_mentioned_when_retraining() -> None:
    decision = decide(drifting(prediction_drift=True), T)
    assert decision.action is Action.RETRAIN
    assert "with prediction drift" in decision.reason


def test_retrain_cools_down_after_a_recent_retrain() -> None:
    figures = drifting(last_retrain_at=NOW - timedelta(minutes=10))
    decision = decide(figures, T)
    assert decision.action is Action.NONE
    assert "cooling down until 12:20 UTC (last retrain 11:50 UTC)" in decision.reason
    assert decision.figures["retrain_cooldown_until"] == "2024-06-01T12:20:00+00:00"


def test_retrain_allowed_once_cool_down_is_over() -> None:
    figures = drifting(last_retrain_at=NOW - timedelta(seconds=T.retrain_cooldown_s))
    assert decide(figures, T).action is Action.RETRAIN


def test_waiting_challenger_blocks_retrain_and_says_so() -> None:
    figures = drifting(
        challenger_version="4",
        challenger_labelled_rows=40,
        challenger_created_at=NOW - timedelta(hours=2),
    )
    decision = decide(figures, T)
    assert decision.action is Action.NONE
    assert "challenger v4 is still waiting for live labels (40 < 100)" in decision.reason
    assert "pile up challengers" in decision.reason
    assert "not enough labelled rows for challenger v4: 40 < 100" in decision.reason


def test_challenger_of_unknown_age_keeps_blocking_retrain() -> None:
    figures = drifting(challenger_version="4", challenger_labelled_rows=0)
    assert decide(figures, T).action is Action.NONE


def test_starved_challenger_is_retired_after_patience_then_drift_retrains() -> None:
    figures = drifting(
        challenger_version="4",
        challenger_labelled_rows=0,
        challenger_created_at=NOW - timedelta(seconds=T.challenger_patience_s + 3600),
    )
    decision = decide(figures, T)
    assert decision.action is Action.RETIRE_CHALLENGER
    assert decision.from_version == "4"
    assert decision.reason == (
        "challenger v4 waited 25.0 h for live labels (patience 24.0 h) without being "
        "judged: 0 < 100 labelled rows"
    )
    assert any(note.startswith("drift share 0.58") for note in decision.notes)
    retired = replace(figures, challenger_version=None, challenger_created_at=None)
    assert decide(retired, T).action is Action.RETRAIN


def test_patience_falls_back_to_last_retrain_time() -> None:
    figures = drifting(
        challenger_version="4",
        challenger_labelled_rows=0,
        last_retrain_at=NOW - timedelta(days=2),
    )
    assert decide(figures, T).action is Action.RETIRE_CHALLENGER


def test_challenger_that_lost_is_retired_and_no_longer_blocks_retrain() -> None:
    figures = drifting(challenger_version="4", challenger_metric=10.5, challenger_labelled_rows=300)
    decision = decide(figures, T)
    assert decision.action is Action.RETIRE_CHALLENGER
    assert decision.reason.startswith(
        "challenger v4 lost on live labels: challenger v4 rmse 10.5 is 5.0% worse"
    )
    assert any(note.startswith("drift share 0.58") for note in decision.notes)


# -- promote -----------------------------------------------------------------------------


def test_better_challenger_is_promoted() -> None:
    decision = decide(with_challenger(9.0), T)
    assert decision.action is Action.PROMOTE
    assert decision.from_version == "3"
    assert decision.to_version == "4"
    assert decision.reason == (
        "challenger v4 rmse 9 is 10.0% better than champion v3 (10) ≥ 5% promotion margin "
        "on 300 / 500 labelled rows"
    )
    assert decision.figures["challenger_vs_champion_gain"] == pytest.approx(0.1)


def test_promotion_tie_at_the_margin_promotes_for_lower_is_better() -> None:
    assert decide(with_challenger(9.5), T).action is Action.PROMOTE


def test_promotion_tie_at_the_margin_promotes_for_higher_is_better() -> None:
    # 0.84 vs 0.80 is exactly 5 % on paper, 4.9999999999999 % in floating point.
    figures = with_challenger(
        0.84, metric_name="f1_macro", higher_is_better=True, champion_metric=0.80
    )
    assert decide(figures, T).action is Action.PROMOTE


def test_challenger_below_margin_is_not_promoted_but_retired() -> None:
    decision = decide(with_challenger(9.6), T)
    assert decision.action is Action.RETIRE_CHALLENGER
    assert "challenger v4 rmse 9.6 is 4.0% better than champion v3 (10) < 5%" in (decision.reason)


def test_direction_matters_for_classification() -> None:
    better = with_challenger(
        0.90, metric_name="f1_macro", higher_is_better=True, champion_metric=0.80
    )
    worse = with_challenger(
        0.70, metric_name="f1_macro", higher_is_better=True, champion_metric=0.80
    )
    assert decide(better, T).action is Action.PROMOTE
    decision = decide(worse, T)
    assert decision.action is Action.RETIRE_CHALLENGER
    assert "12.5% worse" in decision.reason


def test_direction_matters_for_regression() -> None:
    # A larger RMSE is worse even though the number went up.
    decision = decide(with_challenger(11.0), T)
    assert decision.action is Action.RETIRE_CHALLENGER
    assert "10.0% worse" in decision.reason


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"challenger_labelled_rows": 40}, "not enough labelled rows for challenger v4: 40 < 100"),
        ({"champion_labelled_rows": 99}, "not enough labelled rows for champion v3: 99 < 100"),
        ({"challenger_metric": None}, "no live rmse for challenger v4 yet"),
        ({"champion_metric": None}, "no live rmse for champion v3 yet"),
        ({"champion_version": None}, "no champion to compare challenger v4 with"),
    ],
)
def test_promotion_guards(changes: dict[str, object], expected: str) -> None:
    decision = decide(with_challenger(5.0, **changes), T)
    assert decision.action is Action.NONE
    assert expected in decision.reason


def test_labelled_rows_exactly_at_minimum_are_enough() -> None:
    figures = with_challenger(9.0, challenger_labelled_rows=100, champion_labelled_rows=100)
    assert decide(figures, T).action is Action.PROMOTE


def test_promotion_beats_retrain() -> None:
    figures = drifting(challenger_version="4", challenger_metric=9.0, challenger_labelled_rows=300)
    decision = decide(figures, T)
    assert decision.action is Action.PROMOTE
    assert any(note.startswith("drift share 0.58") for note in decision.notes)


def test_zero_champion_metric_does_not_divide_by_zero() -> None:
    figures = with_challenger(
        0.3, metric_name="f1_macro", higher_is_better=True, champion_metric=0.0
    )
    assert decide(figures, T).action is Action.PROMOTE
    assert decide(with_challenger(0.0, champion_metric=0.0), T).action is (Action.RETIRE_CHALLENGER)


# -- rollback ----------------------------------------------------------------------------


def test_worse_champion_inside_watch_period_is_rolled_back() -> None:
    decision = decide(promoted(20, champion_metric=12.0), T)
    assert decision.action is Action.ROLLBACK
    assert decision.from_version == "3"
    assert decision.to_version == "2"
    assert decision.reason == (
        "champion v3 rmse 12 is 20.0% worse than previous v2 (10) > 10% rollback margin "
        "on 500 labelled rows, 20 min after its promotion"
    )


def test_a_champion_restored_by_a_rollback_is_not_rolled_back_again_on_live_figures() -> None:
    # v3 was promoted 20 min ago and rolled back 5 min ago: v2 is champion again, v3 is
    # `previous`. v2 now measuring worse than v3 must not flip the aliases back.
    figures = promoted(
        20,
        champion_version="2",
        previous_version="3",
        champion_metric=12.0,
        last_rollback_at=NOW - timedelta(minutes=5),
    )
    decision = decide(figures, T)
    assert decision.action is Action.NONE
    assert "champion v2 was restored by the rollback at 11:55 UTC" in decision.reason
    assert "no automatic rollback to v3" in decision.reason
    # A rollback older than the promotion does not hold the watch back.
    older = replace(figures, last_rollback_at=NOW - timedelta(minutes=30))
    assert decide(older, T).action is Action.ROLLBACK
    # A restored champion that fails (the fallback answers for it) still rolls back.
    failing = replace(figures, champion_fallback_rows=400, champion_requests=500)
    assert decide(failing, T).action is Action.ROLLBACK


def test_rollback_tie_at_the_margin_does_not_roll_back() -> None:
    decision = decide(promoted(20, champion_metric=11.0), T)
    assert decision.action is Action.NONE
    assert "within the 10% rollback margin" in decision.reason


def test_rollback_for_higher_is_better_metric() -> None:
    figures = promoted(
        20,
        metric_name="f1_macro",
        higher_is_better=True,
        champion_metric=0.70,
        previous_metric=0.80,
    )
    assert decide(figures, T).action is Action.ROLLBACK
    # 0.72 vs 0.80 is exactly the margin (0.09999999999999995 in floating point): no rollback.
    tie = replace(figures, champion_metric=0.72)
    assert decide(tie, T).action is Action.NONE
    # A higher F1 is better: never a rollback.
    assert decide(replace(figures, champion_metric=0.95), T).action is Action.NONE


def test_rollback_not_considered_after_watch_period() -> None:
    decision = decide(promoted(61, champion_metric=12.0), T)
    assert decision.action is Action.NONE
    assert "watch period after its promotion ended at 11:59 UTC; not rolling back" in (
        decision.reason
    )


def test_rollback_at_the_last_second_of_the_watch_period() -> None:
    assert decide(promoted(60, champion_metric=12.0), T).action is Action.ROLLBACK


def test_rollback_needs_enough_champion_labels() -> None:
    decision = decide(promoted(20, champion_metric=12.0, champion_labelled_rows=40), T)
    assert decision.action is Action.NONE
    assert "not enough labelled rows for champion v3 to judge a rollback: 40 < 100" in (
        decision.reason
    )


@pytest.mark.parametrize("changes", [{"previous_version": None}, {"previous_metric": None}])
def test_rollback_needs_a_previous_version_with_a_metric(changes: dict[str, object]) -> None:
    decision = decide(promoted(20, champion_metric=12.0, **changes), T)
    assert decision.action is Action.NONE
    assert "no previous version with a rmse to roll back to" in decision.reason


def test_rollback_beats_promotion_and_retrain() -> None:
    figures = promoted(
        20,
        champion_metric=12.0,
        challenger_version="4",
        challenger_metric=9.0,
        challenger_labelled_rows=300,
        drift_share=0.9,
        drifted_features=("temp",),
    )
    decision = decide(figures, T)
    assert decision.action is Action.ROLLBACK
    assert len(decision.notes) == 2


def test_naive_and_aware_datetimes_mix() -> None:
    naive_now = NOW.replace(tzinfo=None)
    figures = promoted(20, champion_metric=12.0, now=naive_now)
    assert decide(figures, T).action is Action.ROLLBACK


# -- records and thresholds --------------------------------------------------------------


def test_decision_records_figures_and_thresholds_as_json() -> None:
    import json

    decision = decide(promoted(20, champion_metric=12.0), T)
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["action"] == "rollback"
    assert record["figures"]["champion_metric"] == 12.0
    assert record["figures"]["thresholds"]["rollback_margin"] == 0.10
    assert record["figures"]["last_promotion_at"] == "2024-06-01T11:40:00+00:00"


@pytest.mark.parametrize(
    "bad",
    [
        {"drift_share_threshold": 1.5},
        {"ood_rate_threshold": -0.1},
        {"min_labelled_rows": -1},
        {"live_promotion_margin": -0.01},
    ],
)
def test_thresholds_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Thresholds(**bad)  # type: ignore[arg-type]


def test_relative_gain_is_direction_aware() -> None:
    assert relative_gain(9.0, 10.0, higher_is_better=False) == pytest.approx(0.1)
    assert relative_gain(0.9, 0.8, higher_is_better=True) == pytest.approx(0.125)
    assert relative_gain(1.0, 0.0, higher_is_better=True) == float("inf")
    assert relative_gain(0.0, 0.0, higher_is_better=False) == 0.0


def test_importing_policy_does_not_import_evidently_or_qdrant() -> None:
    code = (
        "import sys, monitoring.policy; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('evidently', 'qdrant_client', 'qdrant_edge', 'pandas', 'numpy')]; "
        "print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- properties --------------------------------------------------------------------------

_metric = st.none() | st.floats(allow_nan=True, allow_infinity=False, width=32)
_rows = st.integers(min_value=0, max_value=10_000)
_moment = st.none() | st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC))
_version = st.none() | st.sampled_from(["1", "2", "v7"])

figures_strategy = st.builds(
    Figures,
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31)),
    window_rows=_rows,
    feature_count=st.none() | st.integers(min_value=0, max_value=50),
    drift_share=st.none() | st.floats(min_value=0, max_value=1),
    drifted_features=st.lists(st.sampled_from(["a", "b", "c"]), max_size=3).map(tuple),
    prediction_drift=st.none() | st.booleans(),
    ood_rate=st.none() | st.floats(min_value=0, max_value=1),
    higher_is_better=st.booleans(),
    champion_version=_version,
    champion_metric=_metric,
    champion_labelled_rows=_rows,
    challenger_version=_version,
    challenger_metric=_metric,
    challenger_labelled_rows=_rows,
    challenger_created_at=_moment,
    previous_version=_version,
    previous_metric=_metric,
    last_promotion_at=_moment,
    last_retrain_at=_moment,
)
thresholds_strategy = st.builds(
    Thresholds,
    drift_share_threshold=st.floats(min_value=0, max_value=1),
    ood_rate_threshold=st.floats(min_value=0, max_value=1),
    min_window_rows=st.integers(min_value=0, max_value=1_000),
    min_labelled_rows=st.integers(min_value=0, max_value=1_000),
    live_promotion_margin=st.floats(min_value=0, max_value=1),
    rollback_margin=st.floats(min_value=0, max_value=1),
    watch_period_s=st.floats(min_value=0, max_value=1e12),
    retrain_cooldown_s=st.floats(min_value=0, max_value=1e12),
    challenger_patience_s=st.floats(min_value=0, max_value=1e12),
)


def _until(moment: datetime, seconds: float) -> datetime:
    """``moment + seconds`` at datetime's microsecond resolution, clamped like the policy."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


@settings(max_examples=400, deadline=None)
@given(figures=figures_strategy, thresholds=thresholds_strategy)
def test_decide_never_raises_and_respects_its_guards(
    figures: Figures, thresholds: Thresholds
) -> None:
    decision = decide(figures, thresholds)
    assert isinstance(decision, Decision)
    assert decision.reason
    now = figures.now.replace(tzinfo=UTC)
    if decision.action is Action.ROLLBACK:
        assert figures.last_promotion_at is not None
        assert now <= _until(figures.last_promotion_at, thresholds.watch_period_s)
        assert figures.champion_labelled_rows >= thresholds.min_labelled_rows
        assert decision.to_version == figures.previous_version is not None
    if decision.action is Action.PROMOTE:
        assert figures.challenger_labelled_rows >= thresholds.min_labelled_rows
        assert figures.champion_labelled_rows >= thresholds.min_labelled_rows
        assert decision.to_version == figures.challenger_version is not None
    if decision.action is Action.RETRAIN:
        assert figures.window_rows >= thresholds.min_window_rows
        if figures.last_retrain_at is not None:
            assert now >= _until(figures.last_retrain_at, thresholds.retrain_cooldown_s)


# -- labels late or partial: intervals, retrain pending ---------------------------------


def test_promotion_needs_the_whole_interval_to_clear_the_margin() -> None:
    thin = with_challenger(
        9.0, challenger_gain_interval=(-0.02, 0.22), interval_level=0.9, champion_labelled_rows=120
    )
    decision = decide(thin, T)
    assert decision.action is Action.NONE  # not promoted, and not retired: it may still win
    assert decision.reason.endswith(
        "challenger v4 rmse 9 is 10.0% better than champion v3 (10), but the 90% interval of "
        "the gain [-2.0%, +22.0%] on 300 / 120 labelled rows does not clear the 5% promotion "
        "margin"
    )
    assert decision.figures["challenger_gain_interval"] == [-0.02, 0.22]
    sure = replace(thin, challenger_gain_interval=(0.06, 0.14))
    assert decide(sure, T).action is Action.PROMOTE


def test_a_challenger_whose_interval_cannot_reach_the_margin_is_retired() -> None:
    figures = with_challenger(9.8, challenger_gain_interval=(-0.03, 0.049), interval_level=0.9)
    assert decide(figures, T).action is Action.RETIRE_CHALLENGER
    hopeful = replace(figures, challenger_gain_interval=(-0.03, 0.07))
    assert decide(hopeful, T).action is Action.NONE


def test_rollback_needs_the_interval_wholly_beyond_the_margin() -> None:
    unsure = promoted(20, champion_metric=12.0, champion_gain_interval=(-0.35, -0.05))
    decision = decide(unsure, T)
    assert decision.action is Action.NONE
    assert "does not rule out staying within the 10% rollback margin" in decision.reason
    sure = replace(unsure, champion_gain_interval=(-0.35, -0.12))
    assert decide(sure, T).action is Action.ROLLBACK


def test_drift_without_labels_is_a_pending_retrain_until_labels_arrive() -> None:
    decision = decide(drifting(labelled_rows=12), T)
    assert decision.action is Action.RETRAIN_PENDING
    assert decision.reason.startswith(
        "drift detected — retrain pending: 12 of 100 labelled rows (drift share 0.58"
    )
    assert decide(drifting(labelled_rows=100), T).action is Action.RETRAIN
    now = Thresholds(retrain_without_labels=True)
    assert decide(drifting(labelled_rows=0), now).action is Action.RETRAIN
    cooling = drifting(labelled_rows=0, last_retrain_at=NOW - timedelta(minutes=5))
    assert decide(cooling, T).action is Action.NONE


def test_the_thresholds_are_the_settings_of_the_same_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One set of defaults (`config.thresholds`); the live promotion margin is not the
    training gate's `promotion_margin`; the environment variables keep their names."""
    from config.settings import Settings
    from monitoring.policy import thresholds_from

    assert thresholds_from(Settings()) == Thresholds()
    monkeypatch.setenv("DRIFTLOOP_PROMOTION_MARGIN", "0.3")
    monkeypatch.setenv("DRIFTLOOP_LIVE_PROMOTION_MARGIN", "0.07")
    monkeypatch.setenv("DRIFTLOOP_ROLLBACK_MARGIN", "0.2")
    settings = Settings()
    thresholds = thresholds_from(settings)
    assert settings.promotion_margin == 0.3  # the gate's, on the holdout
    assert (thresholds.live_promotion_margin, thresholds.rollback_margin) == (0.07, 0.2)
