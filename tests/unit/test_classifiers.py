"""Classifiers as first-class: the decision rule, metric names, the task explanation,
probabilities in /predict and in the log, and prediction drift on labels and scores."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from bentos.app import ServingApp
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel, classifier_rule
from config.serving import ServingSettings
from monitoring.drift import label_shares, measure_drift
from monitoring.metrics import primary_metric
from pipelines.evaluate import (
    classifier_decision,
    explain_task,
    holdout_metrics,
    score_pyfunc,
)
from registry import VersionInfo
from registry.decision import (
    Decision,
    check_positive_class,
    choose_positive_class,
    class_key,
    probability_function,
)

# -- the decision rule ----------------------------------------------------------------------


def test_the_threshold_turns_p_positive_into_the_label() -> None:
    proba = np.array([[0.9, 0.1], [0.45, 0.55], [0.25, 0.75], [0.7, 0.3]])
    default = Decision(("No", "Yes"), "Yes")
    assert default.labels(proba).tolist() == ["No", "Yes", "Yes", "No"]
    strict = Decision(("No", "Yes"), "Yes", threshold=0.7)
    assert strict.labels(proba).tolist() == ["No", "No", "Yes", "No"]
    lenient = Decision(("No", "Yes"), "Yes", threshold=0.2)
    assert lenient.labels(proba).tolist() == ["No", "Yes", "Yes", "Yes"]
    np.testing.assert_array_equal(default.scores(proba), proba[:, 1])


def test_the_positive_class_may_be_the_first_column() -> None:
    decision = Decision((0, 1), 0, threshold=0.6)
    proba = np.array([[0.65, 0.35], [0.55, 0.45]])
    assert decision.labels(proba).tolist() == [0, 1]
    np.testing.assert_array_equal(decision.scores(proba), [0.65, 0.55])


def test_multiclass_takes_the_most_probable_class_and_has_no_score() -> None:
    decision = Decision(("a", "b", "c"))
    proba = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert decision.labels(proba).tolist() == ["b", "a"]
    assert decision.scores(proba) is None and not decision.binary
    assert decision.tags() == {"positive_class": "", "decision_threshold": ""}


def test_a_bad_rule_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        Decision(("No", "Yes"), "Yes", threshold=1.0)
    with pytest.raises(ValueError, match="not one of the classes"):
        Decision(("No", "Yes"), "Maybe")


def test_the_rule_round_trips_through_the_recorded_metadata() -> None:
    decision = Decision((False, True), True, 0.3)
    again = Decision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again == decision
    assert decision.tags() == {"positive_class": "True", "decision_threshold": "0.3"}


@pytest.mark.parametrize(
    ("classes", "y", "wanted", "positive", "why"),
    [
        (["No", "Yes"], ["No"] * 3 + ["Yes"] * 7, None, "Yes", "reads as the positive"),
        ([0, 1], [1] * 9 + [0], None, 1, "reads as the positive"),
        ([False, True], [True, False], None, True, "reads as the positive"),
        (["bad", "good"], ["good"] * 9 + ["bad"], None, "bad", "rarer class"),
        (["bad", "good"], ["good"] * 9 + ["bad"], "good", "good", "set by positive_class"),
        ([0, 1], [0, 1], "0", 0, "set by positive_class"),
        (["a", "b", "c"], ["a", "b", "c"], None, None, "3 classes"),
        (["a", "b", "c"], ["a", "b", "c"], "a", None, "'a' does not apply"),
    ],
)
def test_the_positive_class_is_chosen_by_setting_name_or_rarity(
    classes: list[Any], y: list[Any], wanted: str | None, positive: Any, why: str
) -> None:
    chosen, reason = choose_positive_class(classes, pd.Series(y), wanted)
    assert chosen == positive and type(chosen) is type(positive)
    assert why in reason


def test_a_positive_class_that_is_not_a_class_names_the_classes() -> None:
    with pytest.raises(ValueError, match=r"'maybe'.*\['No', 'Yes'\].*DRIFTLOOP_POSITIVE_CLASS"):
        choose_positive_class(["No", "Yes"], pd.Series(["No", "Yes"]), "maybe")
    with pytest.raises(ValueError, match=r"\['No', 'Yes'\]"):
        check_positive_class(np.array(["Yes", "No", "Yes"], dtype=object), "yes")


def test_class_keys_spell_json_and_numpy_values_alike() -> None:
    assert {class_key(v) for v in (1, 1.0, np.int64(1), "1")} == {"1"}
    assert class_key(np.bool_(True)) == "True"


# -- metrics --------------------------------------------------------------------------------


def test_classification_metrics_are_named_for_what_they_measure() -> None:
    y = np.array(["No", "No", "Yes", "Yes", "No"])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45], [0.8, 0.2]])
    labels = Decision(("No", "Yes"), "Yes").labels(proba)
    metrics = holdout_metrics("classification", y, labels, proba, ["No", "Yes"])
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["roc_auc"] == pytest.approx(1.0)  # every Yes scores above every No
    expected = -np.mean(np.log([0.9, 0.6, 0.7, 0.45, 0.8]))
    assert metrics["log_loss"] == pytest.approx(expected)
    assert primary_metric("classification").name == "f1_macro"
    assert set(holdout_metrics("classification", y, labels)) == {"accuracy", "f1_macro"}


def test_versions_registered_with_the_old_f1_name_still_compare() -> None:
    old = VersionInfo("m", "3", "r", "s", (), {"holdout_f1": "0.81"}, datetime.now(UTC))
    new = VersionInfo("m", "4", "r", "s", (), {"holdout_f1_macro": "0.83"}, datetime.now(UTC))
    assert old.holdout_metric("f1_macro") == pytest.approx(0.81)
    assert new.holdout_metric("f1_macro") == pytest.approx(0.83)
    assert old.holdout_metric("rmse") is None


# -- the task explained ---------------------------------------------------------------------


def test_the_cli_explains_an_inferred_binary_classifier() -> None:
    y = pd.Series(["No"] * 98 + ["Yes"] * 2, name="default")
    decision, why = classifier_decision(["No", "Yes"], y, None, 0.5)
    text = explain_task(y, "classification", "auto", decision, why)
    assert text == (
        "task: classification (inferred: the target holds text/booleans) — target 'default' "
        "has 2 classes (No, Yes): positive class 'Yes' (its name reads as the positive "
        "answer), threshold 0.5 on P(Yes)"
    )


def test_the_cli_explains_regression_and_how_to_override() -> None:
    y = pd.Series(np.arange(869, dtype=float), name="cnt")
    text = explain_task(y, "regression", "auto")
    assert "task: regression" in text and "--task classification" in text
    assert "target 'cnt' is numeric with 869 distinct values" in text
    assert "set by --task" in explain_task(y, "regression", "regression")


def test_the_cli_explains_an_integer_multiclass_target() -> None:
    y = pd.Series([1, 2, 3] * 100, name="grade")
    decision, why = classifier_decision([1, 2, 3], y, None, 0.5)
    text = explain_task(y, "classification", "auto", decision, why)
    assert "integer target with 3 distinct values" in text and "--task regression" in text
    assert text.endswith("has 3 classes (1, 2, 3): the most probable class is the label")


# -- serving --------------------------------------------------------------------------------

SCHEMA = RecordSchema.from_mlflow(Schema([ColSpec("double", "temp")]))


class Classifier:
    """A pyfunc stand-in: P(Yes) = temp; `predict` is the argmax a labels-only version gives."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.where(frame["temp"].to_numpy() >= 0.5, "Yes", "No")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame["temp"].to_numpy(dtype=float)
        return np.column_stack([1 - p, p])


class Registry:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.current = aliases

    def aliases(self) -> dict[str, str]:
        return dict(self.current)


def classifier_app(
    tmp_path: Path, threshold: float, scored: set[str], share: float = 0.0
) -> ServingApp:
    """Versions 1 and 2 of the same classifier; those in `scored` record a decision rule."""
    model = Classifier()
    decision = Decision(("No", "Yes"), "Yes", threshold)

    def loader(version: str, allow_import: bool) -> LoadedModel:
        rule = {"decision": decision, "proba": model.predict_proba} if version in scored else {}
        return LoadedModel(version, f"m:v{version}", model, SCHEMA, LabelSchema("string"), **rule)

    config = ServingSettings(
        state_dir=tmp_path, tracking_uri="http://127.0.0.1:9", canary_share=share
    )
    app = ServingApp(config, model_name="m", source=Registry({"champion": "1"}), loader=loader)
    app.follower.poll_once()
    return app


def post(app: ServingApp, temps: list[float]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        body = [{"temp": t, "request_id": f"r{i}"} for i, t in enumerate(temps)]
        response = await app.predict(body)
        assert response.status_code == 200, response.body
        return json.loads(response.body)

    try:
        return asyncio.run(go())
    finally:
        app.writer.close()


def test_predict_answers_labels_and_probabilities_that_sum_to_one(tmp_path: Path) -> None:
    app = classifier_app(tmp_path, threshold=0.5, scored={"1"})
    try:
        body = post(app, [0.1, 0.6, 0.35])
        assert body["predictions"] == ["No", "Yes", "No"]
        probs = body["probabilities"]
        assert [sorted(p) for p in probs] == [["No", "Yes"]] * 3
        assert [p["Yes"] for p in probs] == pytest.approx([0.1, 0.6, 0.35])
        assert all(sum(p.values()) == pytest.approx(1.0) for p in probs)
        logged = app.log.predictions()
        assert [(r.prediction, r.scores) for r in logged] == list(
            zip(body["predictions"], probs, strict=True)
        )
        meta = app.metadata()[1]["champion"]["classifier"]
        assert meta == {
            "classes": ["No", "Yes"],
            "positive_class": "Yes",
            "decision_threshold": 0.5,
            "probabilities": True,
        }
    finally:
        app.log.close()


def test_the_recorded_threshold_decides_the_label(tmp_path: Path) -> None:
    app = classifier_app(tmp_path, threshold=0.3, scored={"1"})
    try:
        body = post(app, [0.1, 0.6, 0.35])
        assert body["predictions"] == ["No", "Yes", "Yes"]  # 0.35 ≥ 0.3
    finally:
        app.log.close()


def test_a_version_without_a_recorded_rule_answers_labels_only(tmp_path: Path) -> None:
    app = classifier_app(tmp_path, threshold=0.3, scored=set())
    try:
        body = post(app, [0.1, 0.6, 0.35])
        assert body["predictions"] == ["No", "Yes", "No"]  # its own predict, no threshold
        assert "probabilities" not in body
        assert [r.scores for r in app.log.predictions()] == [None] * 3
        assert "classifier" not in app.metadata()[1]["champion"]
    finally:
        app.log.close()


def test_mixed_canary_answers_null_probabilities_for_the_labels_only_version(
    tmp_path: Path,
) -> None:
    app = classifier_app(tmp_path, threshold=0.5, scored={"2"}, share=0.5)
    app.follower.source.current = {"champion": "1", "challenger": "2"}  # type: ignore[attr-defined]
    app.follower.poll_once()
    try:
        body = post(app, [i / 40 for i in range(40)])
        by_version = {
            v: [
                p
                for p, w in zip(body["probabilities"], body["model_versions"], strict=True)
                if w == v
            ]
            for v in ("1", "2")
        }
        assert by_version["1"] and all(p is None for p in by_version["1"])
        assert by_version["2"] and all(p is not None for p in by_version["2"])
    finally:
        app.log.close()


class _Pyfunc:
    """Stands in for a loaded mlflow.sklearn pyfunc: the raw model is the classifier."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def get_raw_model(self) -> Any:
        return self.raw

    def predict(self, frame: pd.DataFrame) -> Any:
        return self.raw.predict(frame)


def test_serving_uses_the_rule_only_when_the_models_classes_match_it() -> None:
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"temp": np.linspace(0, 1, 40)})
    raw = LogisticRegression().fit(X, np.where(X["temp"] > 0.5, "Yes", "No"))
    pyfunc = _Pyfunc(raw)
    recorded = Decision(("No", "Yes"), "Yes", 0.4).to_dict()
    decision, proba = classifier_rule(pyfunc, recorded, "7")
    assert decision == Decision(("No", "Yes"), "Yes", 0.4) and proba is not None
    assert classifier_rule(pyfunc, None, "7") == (None, None)  # registered before the rule
    swapped = Decision(("Yes", "No"), "Yes").to_dict()
    assert classifier_rule(pyfunc, swapped, "7") == (None, None)
    labels, probabilities, classes = score_pyfunc(pyfunc, X, "classification", decision)
    assert classes == ["No", "Yes"]
    assert labels.tolist() == np.where(probabilities[:, 1] >= 0.4, "Yes", "No").tolist()
    assert probability_function(_Pyfunc(object())) is None
    # A champion registered before the rule is scored by the gate with its own labels and,
    # when its model has them, probabilities: the same metric names as a new version.
    old_labels, old_proba, _ = score_pyfunc(pyfunc, X, "classification")
    assert old_labels.tolist() == raw.predict(X).tolist() and old_proba is not None
    y = np.where(X["temp"] > 0.5, "Yes", "No")
    assert set(holdout_metrics("classification", y, old_labels, old_proba, classes)) == {
        "accuracy",
        "f1_macro",
        "roc_auc",
        "log_loss",
    }


# -- prediction drift -----------------------------------------------------------------------


def _credit(n: int, yes_rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    yes = rng.random(n) < yes_rate
    score = np.where(yes, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))
    return pd.DataFrame(
        {
            "balance": rng.normal(1000, 300, n),
            "prediction": np.where(yes, "Yes", "No"),
            "score": score,
        }
    )


def test_a_yes_rate_from_2_to_29_percent_is_prediction_drift_on_labels_and_scores() -> None:
    reference, current = _credit(3000, 0.02, 1), _credit(1000, 0.29, 2)
    result, _ = measure_drift(
        reference,
        current,
        ["balance"],
        ["prediction"],
        prediction_column="prediction",
        score_column="score",
    )
    assert result.prediction_drift is not None and result.prediction_drift.drifted
    assert result.score_drift is not None and result.score_drift.drifted
    shares = result.prediction_shares
    assert shares["reference"]["Yes"] == pytest.approx(0.02, abs=0.01)
    assert shares["current"]["Yes"] == pytest.approx(0.29, abs=0.03)
    assert not result.dataset_drift  # the features did not move: only the predictions
    assert json.dumps(result.to_dict())  # the record and the CLI read it as JSON


def test_the_same_yes_rate_is_no_prediction_drift() -> None:
    result, _ = measure_drift(
        _credit(3000, 0.1, 1),
        _credit(1000, 0.1, 2),
        ["balance"],
        ["prediction"],
        prediction_column="prediction",
        score_column="score",
    )
    assert result.prediction_drift is not None and not result.prediction_drift.drifted
    assert result.score_drift is not None and not result.score_drift.drifted


def test_scores_missing_on_one_side_are_not_judged() -> None:
    reference = _credit(500, 0.1, 1).drop(columns="score")  # a reference cached before scores
    result, _ = measure_drift(
        reference,
        _credit(500, 0.1, 2),
        ["balance"],
        ["prediction"],
        prediction_column="prediction",
        score_column="score",
    )
    assert result.score_drift is None and result.prediction_drift is not None
    labels_only = _credit(500, 0.1, 3).assign(score=np.nan)  # a labels-only version answered
    result, _ = measure_drift(
        _credit(500, 0.1, 1),
        labels_only,
        ["balance"],
        ["prediction"],
        prediction_column="prediction",
        score_column="score",
    )
    assert result.score_drift is None


def test_label_shares_cover_classes_seen_on_either_side() -> None:
    shares = label_shares(pd.Series(["No", "No", "Yes", "No"]), pd.Series(["Maybe", "No"]))
    assert shares == {
        "reference": {"Maybe": 0.0, "No": 0.75, "Yes": 0.25},
        "current": {"Maybe": 0.5, "No": 0.5, "Yes": 0.0},
    }


def test_the_monitor_reads_p_positive_of_each_sampled_prediction(tmp_path: Path) -> None:
    from pipelines.monitor import window_scores
    from predlog.log import PredictionLog

    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url)
    log.append(
        rows=[
            ("a", None, 1.0, "m", "2", "champion", {"t": 1}, "Yes", 1.0, {"No": 0.3, "Yes": 0.7}),
            ("a", None, 1.0, "m", "3", "shadow", {"t": 1}, "No", 1.0, {"No": 0.9, "Yes": 0.1}),
            ("b", None, 2.0, "m", "1", "champion", {"t": 2}, "No", 1.0, None),
        ]
    )
    log.close()
    sample = pd.DataFrame(
        {"request_id": ["b", "a"], "model_version": ["1", "2"], "role": ["champion"] * 2},
        index=[10, 11],
    )
    scores = window_scores(url, "m", sample, "Yes")
    assert scores.index.tolist() == [10, 11]
    assert np.isnan(scores[10]) and scores[11] == pytest.approx(0.7)


class _Logged(_Pyfunc):
    """A loaded pyfunc with the MLmodel metadata a version records."""

    def __init__(self, raw: Any, metadata: dict[str, Any]) -> None:
        super().__init__(raw)
        self.metadata = type("Meta", (), {"metadata": metadata})()


def test_the_monitors_reference_is_labelled_by_the_recorded_rule() -> None:
    from sklearn.linear_model import LogisticRegression

    from pipelines.reference import reference_predictions

    X = pd.DataFrame({"temp": np.linspace(0, 1, 50)})
    raw = LogisticRegression().fit(X, np.where(X["temp"] > 0.5, "Yes", "No"))
    rule = Decision(("No", "Yes"), "Yes", 0.2)
    labels, score = reference_predictions(
        _Logged(raw, {"driftloop_decision": rule.to_dict()}), X, "classification"
    )
    p_yes = raw.predict_proba(X)[:, 1]
    np.testing.assert_allclose(score, p_yes)
    assert labels.tolist() == np.where(p_yes >= 0.2, "Yes", "No").tolist()
    assert (labels == "Yes").sum() > (raw.predict(X) == "Yes").sum()  # the threshold counts
    old_labels, old_score = reference_predictions(_Logged(raw, {}), X, "classification")
    assert old_score is None and old_labels.tolist() == raw.predict(X).tolist()


def test_the_monitor_output_shows_class_shares_and_score_drift() -> None:
    from driftloop.cli import classifier_drift_rows

    drift = {
        "prediction_shares": {
            "reference": {"No": 0.98, "Yes": 0.02},
            "current": {"No": 0.71, "Yes": 0.29},
        },
        "score_drift": {"score": 0.31, "method": "Wasserstein distance", "drifted": True},
    }
    assert classifier_drift_rows(drift) == [
        ("prediction_shares", "No 98.0% → 71.0%, Yes 2.0% → 29.0%"),
        ("score_drift", "drifted (Wasserstein distance: 0.31)"),
    ]
    assert classifier_drift_rows({"prediction_drift": None}) == []
