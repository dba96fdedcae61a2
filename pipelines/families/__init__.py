"""Model families: fit a sklearn or torch model behind one interface, served via MLflow pyfunc.

``fit_model(family, config, X_train, y_train)`` returns a ``FittedModel`` that predicts,
explains itself (permutation importance) and logs itself as an MLflow pyfunc that behaves
exactly like its in-process ``predict``. Family modules are imported on demand, so
importing this package never imports torch.
"""

from __future__ import annotations

import pandas as pd

from pipelines.families.base import FAMILIES, FitConfig, FittedModel, pip_requirements

__all__ = ["FAMILIES", "FitConfig", "FittedModel", "fit_model", "pip_requirements"]


def fit_model(
    family: str,
    config: FitConfig,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_valid: pd.DataFrame | None = None,
    y_valid: pd.Series | None = None,
) -> FittedModel:
    """Fit a model of ``family`` on the training rows.

    The validation rows drive torch's early stopping (the last ``config.valid_fraction``
    of the training rows when none are given); sklearn does not use them.
    """
    if family == "sklearn":
        from pipelines.families.sklearn_hgb import fit_sklearn

        return fit_sklearn(config, X_train, y_train)
    if family == "torch":
        from pipelines.families.torch_mlp import fit_torch

        return fit_torch(config, X_train, y_train, X_valid, y_valid)
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
