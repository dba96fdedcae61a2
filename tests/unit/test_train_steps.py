"""The training flow's pure steps: the evaluation of a new model, the gate's inputs and
figures, the version's provenance tags, the label check and the flow's result."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from data.sources import Snapshot, dataset_digest
from pipelines.evaluate import Evaluation, evaluate_model, holdout_metrics
from pipelines.train import (
    ChampionScore,
    TrainResult,
    check_labels,
    gate_decision,
    gate_figures,
    provenance_tags,
)


class Fixed:
    """A fitted classifier stand-in whose probabilities are given."""

    def __init__(self, proba: np.ndarray, classes: list[Any] | None) -> None:
        self.proba, self.classes = proba, classes

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray | None:
        return self.proba if self.classes is not None else None

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.classes is None:
            return self.proba[:, 0]
        return np.asarray(self.classes, dtype=object)[self.proba.argmax(axis=1)]


def churn(labels: list[str]) -> Snapshot:
    frame = pd.DataFrame({"x": np.arange(len(labels), dtype=float), "churn": labels})
    return Snapshot(
        frame, "churn", ("x",), None, dataset_digest(frame), "c.csv", "classification", (), ("x",)
    )


def test_a_classifiers_labels_follow_its_threshold_on_the_positive_class(tmp_path: Path) -> None:
    snap = churn(["No", "No", "No", "Yes", "No", "Yes", "Yes", "No"])
    train, holdout = snap.frame.iloc[:4], snap.frame.iloc[4:]
    # Holdout truth No, Yes, Yes, No; P(Yes) 0.3, 0.45, 0.6, 0.2: the argmax misses the
    # second Yes, the 0.4 threshold on the positive class finds it.
    proba = np.array([[0.7, 0.3], [0.55, 0.45], [0.4, 0.6], [0.8, 0.2]])
    settings = Settings(state_dir=tmp_path, positive_class="Yes", decision_threshold=0.4)
    result = evaluate_model(Fixed(proba, ["No", "Yes"]), snap, train, holdout, settings)
    assert list(result.predicted) == ["No", "Yes", "Yes", "No"]
    assert result.metrics["accuracy"] == pytest.approx(1.0)
    assert list(Fixed(proba, ["No", "Yes"]).predict(holdout)) == ["No", "No", "Yes", "No"]
    assert result.decision is not None and result.decision.positive_class == "Yes"
    assert "positive class 'Yes'" in result.explanation and "threshold 0.4" in result.explanation
    assert result.live is None and result.live_metrics is None


def test_a_regressor_is_scored_on_the_whole_holdout_and_its_live_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(8.0), "y": [0.0, 1, 2, 3, 10, 20, 30, 40]})
    snap = Snapshot(frame, "y", ("x",), None, "d", "r.csv", "regression", (), ("x",))
    predicted = np.array([[10.0], [20.0], [33.0], [44.0]])
    live = np.array([False, False, True, True])
    result = evaluate_model(
        Fixed(predicted, None),
        snap,
        frame.iloc[:4],
        frame.iloc[4:],
        Settings(state_dir=tmp_path),
        live,
    )
    assert result.decision is None and result.proba is None
    assert result.metrics["mae"] == pytest.approx((0 + 0 + 3 + 4) / 4)
    assert result.live_metrics is not None and result.live_metrics["mae"] == pytest.approx(3.5)
    assert holdout_metrics("regression", frame["y"].iloc[4:], predicted[:, 0], rows=live) == (
        result.live_metrics
    )


def evaluation(
    metrics: dict[str, float], live_metrics: dict[str, float] | None = None
) -> Evaluation:
    live = None if live_metrics is None else np.array([True] * 40 + [False] * 10)
    return Evaluation(np.zeros(1), None, metrics, None, "", live, live_metrics)


def test_the_gate_compares_on_the_whole_holdout_without_live_rows(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, promotion_margin=0.02, promotion_policy="auto")
    new = evaluation({"rmse": 90.0, "mae": 60.0})
    champion = ChampionScore("3", {"rmse": 100.0, "mae": 70.0})
    decision = gate_decision(settings, "regression", new, champion, 500)
    assert decision.alias == "champion" and decision.improvement == pytest.approx(0.1)
    assert "rmse 90 vs champion v3 100 on the same holdout" in decision.reason
    assert gate_figures(new, champion) == {
        "new_rmse": 90.0,
        "new_mae": 60.0,
        "champion_rmse": 100.0,
        "champion_mae": 70.0,
    }


def test_a_drift_retrain_is_gated_on_the_live_rows_and_says_so(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, promotion_margin=0.02, promotion_policy="challenger")
    # Worse on the whole holdout, much better on the traffic it will serve.
    new = evaluation({"rmse": 101.0}, {"rmse": 50.0})
    champion = ChampionScore("3", {"rmse": 100.0}, None, {"rmse": 80.0})
    decision = gate_decision(settings, "regression", new, champion, 50)
    assert decision.alias == "challenger" and decision.improvement == pytest.approx(0.375)
    assert (
        "on the 40 live-window rows of the same holdout (the traffic it will serve; whole "
        "holdout of 50 rows: rmse 101 vs 100)"
    ) in decision.reason
    assert gate_figures(new, champion) == {
        "new_rmse": 101.0,
        "champion_rmse": 100.0,
        "live_holdout_rows": 40,
        "live_new_rmse": 50.0,
        "live_champion_rmse": 80.0,
    }


def test_without_a_champion_the_first_version_is_champion(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    decision = gate_decision(
        settings, "classification", evaluation({"f1_macro": 0.7}), ChampionScore(), 9
    )
    assert decision.alias == "champion" and "f1_macro 0.7" in decision.reason
    assert gate_figures(evaluation({"f1_macro": 0.7}), ChampionScore()) == {"new_f1_macro": 0.7}


def test_a_champion_that_cannot_score_leaves_the_new_version_challenger(tmp_path: Path) -> None:
    champion = ChampionScore("2", None, "KeyError: 'temp'")
    decision = gate_decision(
        Settings(state_dir=tmp_path), "regression", evaluation({"rmse": 1.0}), champion, 9
    )
    assert decision.alias == "challenger" and "KeyError: 'temp'" in decision.reason


def test_provenance_tags_name_what_the_version_was_trained_from() -> None:
    plain = SimpleNamespace(contract=SimpleNamespace(revision=1), widened=None)
    assert provenance_tags(None, None, 91.0, None, False, plain) == {  # type: ignore[arg-type]
        "data_source_arg": "",
        "time_from": "",
        "time_until": "91.0",
        "recent_rows_added": "",
        "shuffled_labels": "false",
        "contract_revision": "1",
        "contract_widened": "",
    }
    widened = SimpleNamespace(
        contract=SimpleNamespace(revision=3), widened=SimpleNamespace(summary=lambda: "temp ≤ 1.6")
    )
    tags = provenance_tags("d.csv", 1.0, None, "runs:/r/w.parquet", True, widened)  # type: ignore[arg-type]
    assert tags["recent_rows_added"] == "runs:/r/w.parquet"  # the monitor reads this tag
    assert tags["data_source_arg"] == "d.csv" and tags["time_from"] == "1.0"
    assert tags["shuffled_labels"] == "true"
    assert (tags["contract_revision"], tags["contract_widened"]) == ("3", "temp ≤ 1.6")


def test_a_positive_class_that_is_no_label_stops_before_fitting(tmp_path: Path) -> None:
    snap = churn(["No", "Yes"] * 3)
    check_labels(Settings(state_dir=tmp_path, positive_class="Yes"), snap)
    with pytest.raises(ValueError, match="yes"):
        check_labels(Settings(state_dir=tmp_path, positive_class="yes"), snap)


def test_the_result_carries_the_run_the_version_and_the_champion(tmp_path: Path) -> None:
    snap = churn(["No", "Yes"] * 5)
    run = SimpleNamespace(
        settings=Settings(state_dir=tmp_path, model_name="churn-model"),
        snapshot=snap,
        train=snap.frame.iloc[:8],
        holdout=snap.frame.iloc[8:],
        evaluation=Evaluation(np.zeros(2), None, {"f1_macro": 0.5}, None, "task: classification"),
    )
    champion = ChampionScore("1", {"f1_macro": 0.4})
    result = TrainResult.of(
        run, "2", "challenger", "beats", "abc", champion, "churn-model-service:v2"
    )  # type: ignore[arg-type]
    assert result.to_dict() == {
        "model_name": "churn-model",
        "version": "2",
        "alias": "challenger",
        "reason": "beats",
        "family": "sklearn",
        "task": "classification",
        "metric": "f1_macro",
        "metrics": {"f1_macro": 0.5},
        "champion_version": "1",
        "champion_metrics": {"f1_macro": 0.4},
        "run_id": "abc",
        "data_digest": snap.digest,
        "bento_tag": "churn-model-service:v2",
        "rows": {"train": 8, "holdout": 2},
        "task_explanation": "task: classification",
    }


def test_in_process_runs_send_no_heartbeats_unless_asked() -> None:
    """`driftloop train` turns Prefect's flow-run heartbeats off (nothing watches an
    in-process run; their thread costs up to a second at the end of each run), but a
    frequency the user set stays."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    from pipelines.train import in_process_run

    before = get_current_settings()
    default = before.flows.heartbeat_frequency
    with in_process_run():
        inside = get_current_settings()
        assert inside.flows.heartbeat_frequency is None
        # Only that field differs (the settings are copied, not rebuilt).
        changed = inside.model_copy(
            update={"flows": inside.flows.model_copy(update={"heartbeat_frequency": default})}
        )
        assert changed.model_dump() == before.model_dump()
    assert get_current_settings().flows.heartbeat_frequency == default
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), in_process_run():
        assert get_current_settings().flows.heartbeat_frequency == 60
