"""Model families: fit a sklearn or torch model behind one interface, served via MLflow pyfunc.

``fit_model(family, config, X_train, y_train)`` returns a ``FittedModel`` that predicts,
explains itself (permutation importance) and logs itself as an MLflow pyfunc that behaves
exactly like its in-process ``predict``. Family modules are imported on demand, so
importing this package never imports torch; torch is an optional extra
(``pip install 'driftloop[torch]'``) that only the torch family needs.
"""

from __future__ import annotations

from importlib.util import find_spec

import pandas as pd

from pipelines.families.base import FAMILIES, FitConfig, FittedModel, pip_requirements

__all__ = [
    "FAMILIES",
    "FitConfig",
    "FittedModel",
    "MissingFamilyError",
    "fit_model",
    "pip_requirements",
    "require_family",
]

# The distribution each family needs beyond the base install, and the extra that adds it.
_FAMILY_EXTRAS: dict[str, tuple[str, str]] = {"torch": ("torch", "torch")}


class MissingFamilyError(ValueError):
    """A model family was asked for whose optional dependency is not installed."""


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def require_family(family: str) -> None:
    """Fail at once, with the install command, when ``family`` cannot run here.

    Checked before any data is read or anything is logged, so a missing extra never
    leaves a half-made MLflow run behind. Does not import the dependency.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if family in _FAMILY_EXTRAS:
        module, extra = _FAMILY_EXTRAS[family]
        if not _installed(module):
            raise MissingFamilyError(
                f"the {family} family needs {module}, which is not installed: "
                f"pip install 'driftloop[{extra}]'"
            )


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
        require_family(family)
        from pipelines.families.torch_mlp import fit_torch

        return fit_torch(config, X_train, y_train, X_valid, y_valid)
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
