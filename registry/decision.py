"""How a registered classifier turns class probabilities into a label.

A binary classifier has a *positive class* (the one whose probability is the score) and
a *decision threshold*: the label is the positive class when P(positive) ≥ threshold,
the other class otherwise. Both are chosen at training and recorded on the version (the
MLmodel metadata under ``DECISION_KEY``, which serving reads, and the version tags
``positive_class`` / ``decision_threshold``, which the monitor reads), so the holdout
metrics, the served labels and the monitor's reference all use the same rule.
A multi-class model takes the most probable class; a version registered before this
rule existed has no record and serves labels from its own ``predict``.

Pure functions plus one adapter (`probability_function`) that finds a loaded MLflow
pyfunc's ``predict_proba`` without importing anything of the training code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DECISION_KEY = "driftloop_decision"  # MLmodel metadata key
POSITIVE_CLASS_TAG = "positive_class"
THRESHOLD_TAG = "decision_threshold"
DEFAULT_THRESHOLD = 0.5
# Class spellings taken as "the positive one" when no setting names it.
POSITIVE_SPELLINGS = ("1", "1.0", "true", "yes", "y", "positive", "pos")


def class_key(value: Any) -> str:
    """One spelling per class, whatever its JSON/numpy type (1, 1.0, '1' → '1')."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass(frozen=True)
class Decision:
    """The classes (in the model's probability column order) and the binary rule."""

    classes: tuple[Any, ...]
    positive_class: Any | None = None  # None: multi-class (argmax)
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"decision threshold {self.threshold} must be in (0, 1)")
        if self.positive_class is not None:
            keys = [class_key(c) for c in self.classes]
            if class_key(self.positive_class) not in keys:
                raise ValueError(
                    f"positive class {self.positive_class!r} is not one of the classes {keys}"
                )

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2 and self.positive_class is not None

    @property
    def positive_index(self) -> int | None:
        if not self.binary:
            return None
        keys = [class_key(c) for c in self.classes]
        return keys.index(class_key(self.positive_class))

    def labels(self, proba: np.ndarray) -> np.ndarray:
        """One label per row of `proba` (columns in the order of `classes`)."""
        proba = np.asarray(proba, dtype=np.float64)
        classes = np.asarray(self.classes, dtype=object)
        index = self.positive_index
        if index is None:
            return classes[proba.argmax(axis=1)]
        positive = proba[:, index] >= self.threshold
        return np.where(positive, classes[index], classes[1 - index])

    def scores(self, proba: np.ndarray) -> np.ndarray | None:
        """P(positive) per row for a binary rule; None for multi-class."""
        index = self.positive_index
        return None if index is None else np.asarray(proba, dtype=np.float64)[:, index]

    def to_dict(self) -> dict[str, Any]:
        """What the MLmodel metadata records (JSON-able)."""
        return {
            "classes": [_plain(c) for c in self.classes],
            "positive_class": _plain(self.positive_class),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            tuple(data["classes"]),
            data.get("positive_class"),
            float(data.get("threshold", DEFAULT_THRESHOLD)),
        )

    def tags(self) -> dict[str, str]:
        """Version tags: the positive class and threshold ('' for multi-class)."""
        if not self.binary:
            return {POSITIVE_CLASS_TAG: "", THRESHOLD_TAG: ""}
        return {
            POSITIVE_CLASS_TAG: class_key(self.positive_class),
            THRESHOLD_TAG: f"{self.threshold:g}",
        }


def choose_positive_class(
    classes: Sequence[Any], y: pd.Series | Sequence[Any], wanted: str | None = None
) -> tuple[Any | None, str]:
    """The positive class of a binary target, and why it was chosen (for the CLI).

    `wanted` (the ``positive_class`` setting) wins; then a class spelled like a positive
    answer (1, true, yes, positive...); then the rarer class in `y` (the event a model
    is usually built to catch). Multi-class targets have none.
    """
    keys = [class_key(c) for c in classes]
    if wanted not in (None, ""):
        check_positive_class(classes, wanted)
    if len(classes) != 2:
        ignored = f"; positive_class {wanted!r} does not apply" if wanted else ""
        return None, f"{len(classes)} classes: the most probable class is the label{ignored}"
    if wanted not in (None, ""):
        return classes[keys.index(str(wanted))], "set by positive_class"
    named = [c for c, k in zip(classes, keys, strict=True) if k.lower() in POSITIVE_SPELLINGS]
    if len(named) == 1:
        return named[0], "its name reads as the positive answer"
    counts = pd.Series([class_key(v) for v in y]).value_counts()
    rare = min(range(2), key=lambda i: (int(counts.get(keys[i], 0)), -i))
    return classes[rare], "the rarer class in the training data"


def check_positive_class(classes: Sequence[Any], wanted: str) -> None:
    """Fail, naming the classes, when the ``positive_class`` setting is not one of them
    (checked before fitting, so a typo costs no training)."""
    keys = sorted({class_key(c) for c in classes})
    if str(wanted) not in keys:
        raise ValueError(
            f"positive_class {wanted!r} is not a class of the target; its classes are "
            f"{keys}: set DRIFTLOOP_POSITIVE_CLASS to one of them"
        )


def probability_function(pyfunc: Any) -> tuple[Callable[[pd.DataFrame], Any], list[Any]] | None:
    """(predict_proba, classes) of a loaded MLflow pyfunc classifier, or None.

    mlflow.sklearn's pyfunc wraps the estimator (``get_raw_model``); driftloop's torch
    pyfunc exposes ``predict_proba`` and ``classes`` on its Python model. Anything else
    (a regressor, a foreign pyfunc) has no probabilities and serves labels only.
    """
    impl = getattr(pyfunc, "_model_impl", None)
    raw = None
    try:
        raw = pyfunc.get_raw_model()
    except Exception:  # a flavour without a raw model (NotImplementedError, MlflowException)
        raw = None
    if raw is not None and hasattr(raw, "predict_proba") and hasattr(raw, "classes_"):
        return raw.predict_proba, list(raw.classes_)
    try:
        python_model = pyfunc.unwrap_python_model()
    except Exception:  # not a Python model (MlflowException), or no pyfunc at all
        python_model = None
    for candidate in (python_model, impl):
        proba = getattr(candidate, "predict_proba", None)
        classes = getattr(candidate, "classes", None)
        if callable(proba) and classes is not None:
            return proba, list(classes)
    return None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
