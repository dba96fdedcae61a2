"""What every model family shares: the fit configuration, the fitted-model interface,
permutation importance and the pinned pip requirements of a logged model.

A family turns a feature frame into a fitted model that predicts in process exactly as
its MLflow pyfunc predicts once served: a pandas DataFrame of the feature columns in,
a 1-D array out (numbers for regression, class labels in their original type for
classification).
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

FAMILIES = ("sklearn", "torch")
TASKS = ("regression", "classification")

# Distributions a served model imports; pinned to what trained it so the serving
# environment (BentoML, `mlflow models serve`) rebuilds the same one.
_BASE_REQUIREMENTS = (
    "mlflow",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "skops",
    "cloudpickle",
)
_FAMILY_REQUIREMENTS: dict[str, tuple[str, ...]] = {"sklearn": (), "torch": ("torch",)}

# Permutation importance repeats each column shuffle this many times and averages.
_IMPORTANCE_REPEATS = 3
# At most this many rows go into one predict call of the permutation importance.
_IMPORTANCE_ROWS_PER_CALL = 100_000


@dataclass(frozen=True)
class FitConfig:
    """How to fit a model: the task, which columns are features of which kind, and the
    knobs the families share (torch alone uses the epoch and validation settings)."""

    task: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    seed: int = 42
    max_epochs: int = 200
    patience: int = 10
    valid_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.categorical and not self.numeric:
            raise ValueError("no feature columns: name at least one categorical or numeric column")
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"columns {both} are listed as both categorical and numeric")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs and patience must be at least 1")
        if not 0.0 < self.valid_fraction < 0.9:
            raise ValueError(f"valid_fraction {self.valid_fraction} must be in (0, 0.9)")

    @property
    def features(self) -> list[str]:
        """All feature columns, categoricals first (the order models are fed)."""
        return [*self.categorical, *self.numeric]


class FittedModel(ABC):
    """A trained model of one family: predicts in process and logs itself to MLflow."""

    family: str
    task: str
    params: dict[str, Any]
    classes: list[Any] | None

    @property
    @abstractmethod
    def predictor(self) -> Any:
        """What predicts in process, as served: ``predict(X)`` and, for classifiers,
        ``predict_proba(X)`` (a fitted sklearn Pipeline, the torch family's scorer)."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1-D predictions: numbers (regression) or class labels (classification)."""
        return self.predictor.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray | None:
        """Class probabilities, columns in the order of ``classes``; None for regression."""
        if self.task != "classification":
            return None
        return self.predictor.predict_proba(X)

    def history(self) -> dict[str, list[float]] | None:
        """Loss per epoch (``train_loss``, ``valid_loss``) for families that train in epochs."""
        return None

    def log_model(
        self,
        name: str,
        input_example: pd.DataFrame,
        signature: ModelSignature,
        metadata: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Log the model as an MLflow pyfunc under the active run; returns its ModelInfo.

        `metadata` goes into the MLmodel file (e.g. the label rule serving checks); the
        requirements are pinned to what trained it (`pip_requirements`); `params` go on
        the logged model (MLflow adds the run's own)."""
        return self._log_model(
            name,
            signature=signature,
            input_example=input_example,
            metadata=metadata,
            pip_requirements=pip_requirements(self.family),
            params=params,
        )

    @abstractmethod
    def _log_model(self, name: str, **common: Any) -> ModelInfo:
        """Log with the family's MLflow flavour; `common`: the keyword arguments every
        flavour's ``log_model`` takes (signature, input example, metadata, requirements)."""

    def score(self, X: pd.DataFrame, y: pd.Series) -> float:
        """R² for regression, accuracy for classification (higher is better)."""
        return self._score_predictions(self.predict(X), np.asarray(y))

    def _score_predictions(self, predictions: Any, truth: np.ndarray) -> float:
        predictions = np.asarray(predictions)
        if self.task == "classification":
            return float(np.mean(predictions == truth))
        residual = float(np.sum((truth - predictions) ** 2))
        total = float(np.sum((truth - truth.mean()) ** 2))
        return 1.0 - residual / total if total > 0 else 0.0

    def feature_importance(
        self, X: pd.DataFrame, y: pd.Series, max_rows: int = 2000, seed: int = 0
    ) -> pd.Series:
        """Permutation importance of each feature column, sorted descending.

        The drop in ``score`` when one column is shuffled, averaged over a few repeats, on
        at most ``max_rows`` sampled rows so it stays cheap on large data. Works on the
        raw columns, so one-hot or scaled encodings do not split a feature's importance.

        Not `sklearn.inspection.permutation_importance`: that one predicts each shuffled
        copy on its own (37 predict calls for the bundled data instead of one batched
        call, 0.60-0.64 s against 0.46-0.48 s on 2,000 rows) and needs a fittable
        estimator (a pyfunc-served torch model is not one).
        """
        rng = np.random.default_rng(seed)
        if len(X) > max_rows:
            rows = np.sort(rng.choice(len(X), size=max_rows, replace=False))
            X, y = X.iloc[rows], y.iloc[rows]
        X = X.reset_index(drop=True)
        truth = np.asarray(y)
        # Every shuffled copy is scored from one predict call per chunk (not one call per
        # copy): a call's fixed cost (encoders, frame checks) dominates at these sizes.
        # Same permutations in the same order, rows predicted independently: same result.
        copies: list[tuple[str, pd.DataFrame]] = []
        for column in X.columns:
            for _ in range(_IMPORTANCE_REPEATS):
                shuffled = X.copy()
                shuffled[column] = X[column].to_numpy()[rng.permutation(len(X))]
                copies.append((column, shuffled))
        frames = [X, *(frame for _, frame in copies)]
        per_call = max(1, _IMPORTANCE_ROWS_PER_CALL // max(1, len(X)))
        predictions: list[np.ndarray] = []
        for start in range(0, len(frames), per_call):
            chunk = frames[start : start + per_call]
            joined = np.asarray(self.predict(pd.concat(chunk, ignore_index=True)))
            predictions += np.split(joined, len(chunk))
        baseline = self._score_predictions(predictions[0], truth)
        scores: dict[str, list[float]] = {}
        for (column, _), predicted in zip(copies, predictions[1:], strict=True):
            scores.setdefault(column, []).append(self._score_predictions(predicted, truth))
        drops = {column: baseline - float(np.mean(values)) for column, values in scores.items()}
        return pd.Series(drops, name="importance").sort_values(ascending=False)


class _SavedWithoutServingCheck:
    """A flavour module for `mlflow.models.Model.log` that saves with `flavor` and takes
    ``validate_serving_input`` (`Model.log` reads it, but only some flavours'
    ``save_model`` accept it: sklearn's and pyfunc's do not)."""

    def __init__(self, flavor: ModuleType) -> None:
        self.flavor = flavor
        self.__name__ = flavor.__name__

    def save_model(self, *, validate_serving_input: bool = True, **kwargs: Any) -> Any:
        return self.flavor.save_model(**kwargs)


def log_without_serving_check(
    flavor: ModuleType, flavor_name: str, name: str, **kwargs: Any
) -> ModelInfo:
    """``<flavor>.log_model(name, **kwargs)`` without MLflow's serving-input validation.

    That check loads the just-saved model once more and predicts the input example
    through the scoring server's conversion (~0.3 s for the sklearn family, more for
    torch), and on failure only logs a warning. Serving checks the same example
    itself, loudly, when it loads a version (the warm-up before it is swapped in), so
    nothing is lost. `flavor_name` is what the flavour's own ``log_model`` records.

    Two first-call costs of a fresh process (every ``driftloop train``) go too, with the
    same result: MLflow's check of the pip requirements against this environment runs
    by distribution name (`registry.environment.requirements_checked_by_name`: 1.2-1.3 s
    of a first save spent scanning every installed package's files), and skops (which
    saves sklearn models) is imported without torch (0.7 vs 2.0 s where torch is
    installed and not imported yet).
    """
    from mlflow.models import Model

    from registry.environment import import_skops_without_torch, requirements_checked_by_name

    import_skops_without_torch()
    with requirements_checked_by_name():
        return Model.log(
            artifact_path=None,  # deprecated positional argument; `name` is the one
            name=name,
            flavor=_SavedWithoutServingCheck(flavor),
            flavor_name=flavor_name,
            validate_serving_input=False,
            **kwargs,
        )


@functools.cache
def _pinned(family: str) -> tuple[str, ...]:
    names = (*_BASE_REQUIREMENTS, *_FAMILY_REQUIREMENTS[family])
    return tuple(f"{name}=={_public_version(metadata.version(name))}" for name in names)


def pip_requirements(family: str) -> list[str]:
    """Pinned requirements of a logged model, from the installed versions.

    Explicit requirements make ``log_model`` take well under a second instead of ~5 s
    of MLflow inferring them; looked up once per process. Local version labels
    (``2.13.0+cpu``) are dropped because package indexes do not serve them.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return list(_pinned(family))


def _public_version(version: str) -> str:
    return re.sub(r"\+.*$", "", version)


def check_fit_inputs(
    config: FitConfig,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    what: str = "training",
) -> None:
    """Fail early with the missing columns or target values a user can fix."""
    missing = [column for column in config.features if column not in X.columns]
    if missing:
        raise ValueError(f"{what} data lacks feature columns {missing}; it has {list(X.columns)}")
    if len(X) != len(y):
        raise ValueError(f"{what} data has {len(X)} rows but {len(y)} target values")
    if len(X) == 0:
        raise ValueError(f"{what} data is empty")
    n_missing = int(pd.isna(y).sum())
    if n_missing:
        raise ValueError(
            f"{what} target {y.name!r} has {n_missing} missing values; drop those rows first"
        )
