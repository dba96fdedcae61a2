"""The sklearn family: one-hot categoricals + histogram gradient boosting in one Pipeline.

HistGradientBoosting handles missing numeric values natively and the encoder ignores
categories it never saw, so neither crashes at predict time. The whole Pipeline is
logged with ``mlflow.sklearn`` (skops format), whose pyfunc calls ``Pipeline.predict``:
labels for a classifier, numbers for a regressor, exactly as in process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from pipelines.families.base import (
    FitConfig,
    FittedModel,
    check_fit_inputs,
    log_without_serving_check,
)

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

# Types skops refuses to load unless trusted; found by dumping a fitted pipeline and
# asking `skops.io.get_untrusted_types`. A tree model's fitted trees are the only one.
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]

# Rarer categories beyond this many per column share one "infrequent" column.
MAX_CATEGORIES = 64


class SklearnModel(FittedModel):
    """A fitted sklearn Pipeline (encoder + HistGradientBoosting)."""

    family = "sklearn"

    def __init__(self, config: FitConfig, pipeline: Pipeline) -> None:
        self.task = config.task
        self.config = config
        self.pipeline = pipeline
        estimator = pipeline.named_steps["model"]
        self.classes = estimator.classes_.tolist() if config.task == "classification" else None
        self.params = _scalar_params(estimator)

    @property
    def predictor(self) -> Pipeline:
        return self.pipeline

    def _log_model(self, name: str, **common: Any) -> ModelInfo:
        import mlflow.sklearn

        return log_without_serving_check(
            mlflow.sklearn,
            "mlflow.sklearn",
            name,
            sk_model=self.pipeline,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            **common,
        )


def fit_sklearn(config: FitConfig, X_train: pd.DataFrame, y_train: pd.Series) -> SklearnModel:
    """Fit the encoder + gradient boosting pipeline on the training rows.

    A validation split is not used: gradient boosting's defaults do not overfit this kind
    of data much, and every training row helps.
    """
    check_fit_inputs(config, X_train, y_train)
    pipeline = build_pipeline(config)
    pipeline.fit(X_train[config.features], y_train)
    return SklearnModel(config, pipeline)


def build_pipeline(config: FitConfig) -> Pipeline:
    """The unfitted Pipeline for a config: selects, encodes, then boosts."""
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(
                    handle_unknown="ignore", sparse_output=False, max_categories=MAX_CATEGORIES
                ),
                list(config.categorical),
            ),
            ("numeric", "passthrough", list(config.numeric)),
        ],
        remainder="drop",
    )
    if config.task == "classification":
        model: Any = HistGradientBoostingClassifier(random_state=config.seed)
    else:
        model = HistGradientBoostingRegressor(random_state=config.seed)
    return Pipeline([("encode", encode), ("model", model)])


def _scalar_params(estimator: Any) -> dict[str, Any]:
    """The estimator's hyper-parameters that MLflow can log as params (flat scalars)."""
    params: dict[str, Any] = {"estimator": type(estimator).__name__}
    for key, value in estimator.get_params().items():
        if isinstance(value, bool | int | float | str):
            params[key] = value
    params["n_iter"] = int(estimator.n_iter_)
    return params
