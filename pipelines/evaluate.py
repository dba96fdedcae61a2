"""Holdout metrics and the plots logged with every version."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric the gate and the monitor compare, and which way is better."""

    name: str
    higher_is_better: bool


def primary_metric(task: str) -> PrimaryMetric:
    """RMSE for regression; macro F1 for classification (label-only, works for any pyfunc)."""
    if task == "regression":
        return PrimaryMetric("rmse", higher_is_better=False)
    return PrimaryMetric("f1", higher_is_better=True)


def holdout_metrics(
    task: str,
    y_true: pd.Series | np.ndarray,
    y_pred: np.ndarray,
    y_proba: np.ndarray | None = None,
    classes: list[object] | None = None,
) -> dict[str, float]:
    """Regression: rmse, mae, r2. Classification: accuracy, f1 (macro), roc_auc if scores."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)),
        }
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="macro")),
    }
    if y_proba is not None and classes is not None and len(np.unique(y_true)) > 1:
        try:
            if len(classes) == 2:
                result["roc_auc"] = float(skm.roc_auc_score(y_true == classes[1], y_proba[:, 1]))
            else:
                result["roc_auc"] = float(
                    skm.roc_auc_score(y_true, y_proba, multi_class="ovr", labels=classes)
                )
        except ValueError:
            pass  # a class absent from the holdout: AUC undefined, the other metrics stand
    return result


def evaluation_plots(
    task: str,
    y_true: pd.Series,
    y_pred: np.ndarray,
    importance: pd.Series | None,
) -> dict[str, object]:
    """Matplotlib figures keyed by artifact file name (residuals or confusion, importance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, object] = {}
    if task == "regression":
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(y_pred, np.asarray(y_true) - y_pred, s=4, alpha=0.4)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual − predicted")
        ax.set_title("Holdout residuals")
        figures["residuals.png"] = fig
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        skm.ConfusionMatrixDisplay.from_predictions(y_true, y_pred, ax=ax, colorbar=False)
        ax.set_title("Holdout confusion matrix")
        figures["confusion_matrix.png"] = fig
    if importance is not None and len(importance):
        top = importance.head(20)[::-1]
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(top))))
        ax.barh(top.index.astype(str), top.values)
        ax.set_xlabel("permutation importance (holdout)")
        ax.set_title("Feature importance")
        fig.tight_layout()
        figures["feature_importance.png"] = fig
    return figures
