"""Holdout metrics, a new model's evaluation on its holdout, and the plots logged with
every version. Plain functions: no tracking server, no Prefect."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn import metrics as skm

from registry.decision import Decision, choose_positive_class, class_key, probability_function

if TYPE_CHECKING:
    from config.settings import Settings
    from data.sources import Snapshot
    from pipelines.families import FittedModel

_SHOWN_CLASSES = 6  # classes named in the task explanation; more are counted


def holdout_metrics(
    task: str,
    y_true: pd.Series | np.ndarray,
    y_pred: np.ndarray,
    y_proba: np.ndarray | None = None,
    classes: list[object] | None = None,
    rows: np.ndarray | None = None,
) -> dict[str, float]:
    """Regression: rmse, mae, r2. Classification: accuracy, f1_macro, and with
    probabilities (columns in the order of `classes`) roc_auc (binary: of the positive
    class `classes[1]`; more classes: one-vs-rest, macro) and log_loss. `rows`: a boolean
    mask of the rows to score (e.g. the holdout's live-window rows); all rows without."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if rows is not None:
        y_true, y_pred = y_true[rows], y_pred[rows]
        y_proba = None if y_proba is None else np.asarray(y_proba)[rows]
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)),
        }
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if y_proba is None or classes is None:
        return result
    y_proba = np.asarray(y_proba, dtype=np.float64)
    if len(np.unique(y_true)) > 1:
        try:
            if len(classes) == 2:
                result["roc_auc"] = float(skm.roc_auc_score(y_true == classes[1], y_proba[:, 1]))
            else:
                result["roc_auc"] = float(
                    skm.roc_auc_score(y_true, y_proba, multi_class="ovr", labels=classes)
                )
        except ValueError:
            pass  # a class absent from the holdout: AUC undefined, the other metrics stand
    with contextlib.suppress(ValueError):  # a holdout label the model never saw: undefined
        result["log_loss"] = float(skm.log_loss(y_true, y_proba, labels=classes))
    return result


@dataclass(frozen=True)
class Evaluation:
    """A new model on its holdout: the labels (or numbers) serving would give, the
    metrics, and for classifiers the decision rule it is registered with."""

    predicted: np.ndarray
    proba: np.ndarray | None
    metrics: dict[str, float]
    decision: Decision | None
    explanation: str
    live: np.ndarray | None = None  # which holdout rows came from live windows (retrains)
    live_metrics: dict[str, float] | None = None  # the metrics on those rows


def evaluate_model(
    fitted: FittedModel,
    snapshot: Snapshot,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    settings: Settings,
    live: np.ndarray | None = None,
) -> Evaluation:
    """Score `fitted` on the holdout; a classifier's labels come from its decision rule
    (positive class, threshold from the settings), as serving gives them. `live`: a mask
    of holdout rows also scored on their own (the gate compares a retrain on them)."""
    task, target = snapshot.task, snapshot.target
    x_holdout, y_holdout = holdout[list(snapshot.features)], holdout[target]
    proba = fitted.predict_proba(x_holdout)
    predicted = fitted.predict(x_holdout)
    decision, why = None, ""
    if task == "classification" and fitted.classes is not None:
        decision, why = classifier_decision(
            fitted.classes, train[target], settings.positive_class, settings.decision_threshold
        )
        predicted = decision.labels(proba)
    explanation = explain_task(snapshot.frame[target], task, settings.task, decision, why)
    metrics = holdout_metrics(task, y_holdout, predicted, proba, fitted.classes)
    live_metrics = None
    if live is not None:
        live_metrics = holdout_metrics(task, y_holdout, predicted, proba, fitted.classes, live)
    return Evaluation(predicted, proba, metrics, decision, explanation, live, live_metrics)


def classifier_decision(
    classes: list[Any], y_train: pd.Series, positive_class: str | None, threshold: float
) -> tuple[Decision, str]:
    """The decision rule a new classifier is registered with, and why its positive class."""
    positive, why = choose_positive_class(classes, y_train, positive_class)
    return Decision(tuple(classes), positive, threshold), why


def explain_task(
    y: pd.Series, task: str, declared: str, decision: Decision | None = None, why: str = ""
) -> str:
    """One line for the CLI: the task, how it was chosen, and for classifiers the rule.

    e.g. "task: classification (inferred: the target holds text) — target 'default' has 2
    classes (No, Yes): positive class 'Yes' (the rarer class in the training data),
    threshold 0.5".
    """
    labels = y.dropna()
    n_distinct = int(labels.nunique())
    if declared in ("regression", "classification"):
        how = "set by --task/DRIFTLOOP_TASK"
    elif task == "regression":
        how = "inferred: numeric target; override with --task classification"
    elif ptypes.is_bool_dtype(labels) or not ptypes.is_numeric_dtype(labels):
        how = "inferred: the target holds text/booleans"
    else:
        how = (
            f"inferred: integer target with {n_distinct} distinct values (at most 20 and at "
            "most 5 % of the rows); override with --task regression"
        )
    head = f"task: {task} ({how}) — target {y.name!r}"
    if task == "regression":
        return f"{head} is numeric with {n_distinct:,} distinct values"
    classes = list(decision.classes) if decision else sorted(labels.unique().tolist(), key=str)
    named = ", ".join(class_key(c) for c in classes[:_SHOWN_CLASSES])
    more = f", … {len(classes) - _SHOWN_CLASSES} more" if len(classes) > _SHOWN_CLASSES else ""
    text = f"{head} has {len(classes)} classes ({named}{more})"
    if decision is None:
        return text
    if decision.binary:
        return (
            f"{text}: positive class {class_key(decision.positive_class)!r} ({why}), "
            f"threshold {decision.threshold:g} on P({class_key(decision.positive_class)})"
        )
    return f"{text}: the most probable class is the label"


def score_pyfunc(
    pyfunc: Any, X: pd.DataFrame, task: str, decision: Decision | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[Any] | None]:
    """(labels or numbers, probabilities or None, classes or None) of a loaded pyfunc.

    A classifier with probabilities is labelled by its recorded `decision` (else its
    own argmax, which is what its ``predict`` returns); one without answers labels only.
    """
    if task != "classification":
        return np.asarray(pyfunc.predict(X)), None, None
    found = probability_function(pyfunc)
    if found is None:
        return np.asarray(pyfunc.predict(X)), None, None
    proba_fn, classes = found
    proba = np.asarray(proba_fn(X), dtype=np.float64)
    rule = decision if decision is not None else Decision(tuple(classes))
    return rule.labels(proba), proba, classes


def evaluation_plots(
    task: str,
    y_true: pd.Series,
    y_pred: np.ndarray,
    importance: pd.Series | None,
) -> dict[str, object]:
    """Matplotlib figures keyed by artifact file name (residuals or confusion, importance).

    Plain `Figure` objects (no pyplot: nothing is kept in a global figure list, no GUI
    backend) with margins set from the labels instead of `tight_layout`, which draws the
    figure an extra time (~0.1-0.5 s of a training run).
    """
    from matplotlib.figure import Figure

    figures: dict[str, object] = {}
    if task == "regression":
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.scatter(y_pred, np.asarray(y_true) - y_pred, s=4, alpha=0.4)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual − predicted")
        ax.set_title("Holdout residuals")
        figures["residuals.png"] = fig
    else:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        skm.ConfusionMatrixDisplay.from_predictions(y_true, y_pred, ax=ax, colorbar=False)
        ax.set_title("Holdout confusion matrix")
        figures["confusion_matrix.png"] = fig
    if importance is not None and len(importance):
        top = importance.head(20)[::-1]
        height = max(2.5, 0.3 * len(top))
        fig = Figure(figsize=(6, height))
        ax = fig.add_subplot()
        ax.barh(top.index.astype(str), top.values)
        ax.set_xlabel("permutation importance (holdout)")
        ax.set_title("Feature importance")
        # Room for the longest feature name (~0.085 in a character at 10 pt on 6 in),
        # the x label and the title.
        longest = max(len(str(name)) for name in top.index)
        fig.subplots_adjust(
            left=min(0.6, 0.06 + 0.0145 * longest),
            right=0.96,
            bottom=0.6 / height,
            top=1 - 0.4 / height,
        )
        figures["feature_importance.png"] = fig
    return figures
