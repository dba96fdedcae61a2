"""The gate decides the alias of a new version from figures on the same holdout."""

from __future__ import annotations

import pytest

from monitoring.metrics import relative_gain
from pipelines.gate import gate


def test_first_version_becomes_champion() -> None:
    decision = gate("rmse", 50.0, None, False, 0.02, "challenger", champion_version=None)
    assert decision.alias == "champion"
    assert "first version" in decision.reason


@pytest.mark.parametrize("policy", ["challenger", "auto"])
def test_worse_version_is_registered_without_an_alias(policy: str) -> None:
    decision = gate("rmse", 60.0, 50.0, False, 0.02, policy, champion_version="1")
    assert decision.alias is None
    assert decision.improvement == pytest.approx(-0.2)
    assert "does not beat" in decision.reason and "v1" in decision.reason
    assert "registered without an alias" in decision.reason


def test_losers_become_challenger_only_when_asked() -> None:
    decision = gate("rmse", 60.0, 50.0, False, 0.02, "challenger", "1", losers_as_challenger=True)
    assert decision.alias == "challenger"
    assert "challenger anyway (gate_losers_as_challenger)" in decision.reason


def test_winner_promoted_directly_only_under_auto_policy() -> None:
    auto = gate("rmse", 40.0, 50.0, False, 0.02, "auto", champion_version="3")
    waits = gate("rmse", 40.0, 50.0, False, 0.02, "challenger", champion_version="3")
    assert auto.alias == "champion"
    assert waits.alias == "challenger"
    assert "+20.0%" in auto.reason


def test_margin_is_inclusive_and_direction_aware() -> None:
    # F1: higher is better; exactly 2 % better meets a 2 % margin.
    at_margin = gate("f1", 0.816, 0.8, True, 0.02, "auto", champion_version="1")
    below = gate("f1", 0.81, 0.8, True, 0.02, "auto", champion_version="1")
    assert at_margin.alias == "champion"
    assert below.alias is None


def test_champion_that_cannot_score_keeps_new_version_as_challenger() -> None:
    decision = gate(
        "rmse",
        40.0,
        None,
        False,
        0.02,
        "auto",
        champion_version="2",
        champion_error="missing column 'temp'",
    )
    assert decision.alias == "challenger"
    assert "missing column 'temp'" in decision.reason


def test_relative_gain_signs() -> None:
    assert relative_gain(40, 50, higher_is_better=False) == pytest.approx(0.2)
    assert relative_gain(0.9, 0.8, higher_is_better=True) == pytest.approx(0.125)
    assert relative_gain(1.0, 0.0, higher_is_better=True) > 0


@pytest.mark.parametrize(
    ("new", "higher_is_better", "alias"),
    [(0.5, True, "challenger"), (0.0, True, None), (0.0, False, None), (0.1, False, None)],
)
def test_a_zero_champion_score_is_beaten_by_any_better_score(
    new: float, higher_is_better: bool, alias: str | None
) -> None:
    """A champion scoring 0 (F1 0, or a perfect RMSE 0): any better score clears every
    margin (an infinite gain), an equal one is no gain, a worse one never wins."""
    decision = gate("m", new, 0.0, higher_is_better, 0.02, "challenger", champion_version="1")
    assert decision.alias == alias
    assert decision.improvement == relative_gain(new, 0.0, higher_is_better)


def test_a_drift_retrain_is_compared_on_the_live_window_rows_of_the_holdout() -> None:
    from types import SimpleNamespace

    import pandas as pd

    from data.live import MIN_LIVE_GATE_ROWS, live_holdout_rows

    n_live = MIN_LIVE_GATE_ROWS + 5
    provenance = pd.Series(
        ["data/credit.csv"] * 100
        + ["live window /state/retrain/w1.parquet"] * n_live
        + ["live window of credit"] * 3
    )
    snapshot = SimpleNamespace(provenance=provenance)
    holdout = pd.DataFrame(index=provenance.index[50:])  # 50 file rows, all live rows
    live = live_holdout_rows(snapshot, holdout)  # type: ignore[arg-type]
    assert live is not None and live.tolist() == [False] * 50 + [True] * (n_live + 3)
    # too few live rows to judge on: the whole holdout is compared
    few = pd.DataFrame(index=provenance.index[: 100 + MIN_LIVE_GATE_ROWS - 1])
    assert live_holdout_rows(snapshot, few) is None  # type: ignore[arg-type]
    assert live_holdout_rows(SimpleNamespace(provenance=None), holdout) is None  # type: ignore[arg-type]


def test_the_gate_names_the_rows_it_compared_on() -> None:
    decision = gate(
        "f1_macro",
        0.87,
        0.16,
        True,
        0.02,
        "challenger",
        champion_version="1",
        compared_on="the 120 live-window rows of the same holdout",
    )
    assert decision.alias == "challenger"
    assert "on the 120 live-window rows of the same holdout" in decision.reason
