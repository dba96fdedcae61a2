"""A fitted sklearn pipeline's predict without the library's per-call overhead.

The sklearn family's champion is ``Pipeline([ColumnTransformer(one-hot encoder,
pass-through), HistGradientBoosting])``. Its ``predict`` took 2.0 ms for one row and 2.8 ms
for a hundred (bench/README.md "Session 12"), 1.24 ms of it in ``ColumnTransformer.
transform``: joblib's ``Parallel`` set up for two transformers, narwhals and ``inspect``
checks of the frame, the encoder's column-by-column validation — a fixed cost on every
call, larger than the trees'. `RecordSchema` has already checked every value and built
the frame, so none of those checks can fail here.

`lean_pipeline` returns a `LeanPipeline` for a fitted pipeline whose first step is a
ColumnTransformer made only of one-hot encoders over string categories, identity
pass-throughs and drops; every other step runs as the pipeline would run it (its own
``transform``, the final estimator's own ``predict``/``predict_proba``). The column
transformer's arithmetic is done directly: a category's index from a dict (what sklearn's
encoder does for object columns), a 1.0 at that index, the pass-through columns as they
are, blocks stacked with ``np.hstack`` (what ``ColumnTransformer`` does with dense
blocks). Anything it does not handle exactly the same way — a value that is not a
string, an unknown category when the encoder is not told to ignore them — goes through
the pipeline itself for that call. `bentos.store.direct_predict` also compares the two on
the version's input example (and on it with unseen categories) before serving with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


class _NotHandled(Exception):
    """This frame holds a value the lean transform does not handle like sklearn."""


@dataclass(frozen=True)
class OneHotColumns:
    """A fitted OneHotEncoder over string categories, no drop, no infrequent grouping."""

    columns: tuple[str, ...]
    indexes: tuple[dict[str, int], ...]  # category -> position in its block
    width: int
    offsets: tuple[int, ...]
    ignore_unknown: bool
    dtype: Any

    def block(self, frame: pd.DataFrame) -> np.ndarray:
        n = len(frame)
        out = np.zeros((n, self.width), dtype=self.dtype)
        for column, index, offset in zip(self.columns, self.indexes, self.offsets, strict=True):
            values = frame[column].tolist()
            try:
                hot = [index[v] + offset for v in values]
                out[np.arange(n), hot] = 1
            except (KeyError, TypeError):
                out[:, offset : offset + len(index)] = self._slow(values, index)
        return out

    def _slow(self, values: list[Any], index: dict[str, int]) -> np.ndarray:
        """A column with unknown categories: zeros where sklearn writes zeros."""
        block = np.zeros((len(values), len(index)), dtype=self.dtype)
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise _NotHandled(f"non-string category value {value!r}")
            position = index.get(value)
            if position is not None:
                block[row, position] = 1
            elif not self.ignore_unknown:
                raise _NotHandled(f"unknown category {value!r}")
        return block


@dataclass(frozen=True)
class _Passthrough:
    columns: tuple[str, ...]

    def block(self, frame: pd.DataFrame) -> Any:
        """The columns as the pipeline hands them on: stacked directly when they share one
        numeric dtype (what the frame's own conversion gives then, ~5x cheaper than
        selecting a sub-frame), else the sub-frame itself (pandas' common dtype)."""
        arrays = [frame[column].to_numpy() for column in self.columns]
        dtype = arrays[0].dtype
        if dtype.kind in "fiub" and all(a.dtype == dtype for a in arrays):
            return np.column_stack(arrays)
        return frame[list(self.columns)]


@dataclass(frozen=True)
class LeanPipeline:
    """`pipeline`'s predictions with its first step (a ColumnTransformer) done directly."""

    pipeline: Any
    blocks: tuple[OneHotColumns | _Passthrough, ...]
    rest: tuple[Any, ...]  # the steps between the column transformer and the estimator
    estimator: Any

    def transform(self, frame: pd.DataFrame) -> Any:
        """What the pipeline hands its final estimator."""
        out: Any = np.hstack([block.block(frame) for block in self.blocks])
        for step in self.rest:
            out = step.transform(out)
        return out

    def predict(self, frame: pd.DataFrame) -> Any:
        return self._call(frame, "predict")

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        return self._call(frame, "predict_proba")

    def _call(self, frame: pd.DataFrame, method: str) -> Any:
        try:
            features = self.transform(frame)
        except _NotHandled:
            return getattr(self.pipeline, method)(frame)
        return getattr(self.estimator, method)(features)


def lean_pipeline(model: Any) -> LeanPipeline | None:
    """A `LeanPipeline` for `model`, or None when its structure is not one handled here."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(model) is not Pipeline or len(model.steps) < 2:
        return None
    first, estimator = model.steps[0][1], model.steps[-1][1]
    if type(first) is not ColumnTransformer or not hasattr(first, "transformers_"):
        return None
    if estimator is None or isinstance(estimator, str):  # a "passthrough" final step
        return None
    if getattr(first, "sparse_output_", True) or first.transformer_weights is not None:
        return None
    steps = [step for _, step in model.steps[1:-1] if step is not None and step != "passthrough"]
    if not _default_output(first) or not all(_default_output(step) for step in steps):
        return None
    blocks: list[OneHotColumns | _Passthrough] = []
    for _, transformer, columns in first.transformers_:
        if isinstance(columns, str) or not _names(columns):
            return None
        if len(columns) == 0 or transformer == "drop":
            continue
        block = _block(transformer, tuple(columns))
        if block is None:
            return None
        blocks.append(block)
    if not blocks:
        return None
    return LeanPipeline(model, tuple(blocks), tuple(steps), lean_estimator(estimator))


@dataclass(frozen=True)
class LeanTrees:
    """A fitted HistGradientBoosting model's raw predictions without sklearn's per-call
    overhead: its ``_raw_predict`` validates the array (``check_array``) and calls each
    tree through a ``partial`` and ``TreePredictor.predict`` (~5 µs a tree; the bundled
    champion has 100). Here each tree's own Cython traversal (``_predict_from_raw_data``,
    the function ``TreePredictor.predict`` calls) adds into the same array in the same
    order, so the sums are the same floats. An input that is not a 2-D array of the
    model's width goes through sklearn's own ``_raw_predict``."""

    estimator: Any
    trees: tuple[tuple[int, Any, Any], ...]  # (column of the raw output, nodes, cat bitsets)
    known_categories: Any
    feature_index: Any
    n_threads: int
    traverse: Any  # sklearn's _predict_from_raw_data

    def raw_predict(self, X: Any, n_threads: int | None = None) -> np.ndarray:
        estimator = self.estimator
        if not (
            isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == estimator.n_features_in_
        ):
            return type(estimator)._raw_predict(estimator, X, n_threads)  # type: ignore[no-any-return]
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        baseline = estimator._baseline_prediction
        raw = np.zeros((n, estimator.n_trees_per_iteration_), dtype=baseline.dtype, order="F")
        raw += baseline
        columns = [raw[:, k] for k in range(raw.shape[1])]
        out = np.empty(n, dtype=np.float64)
        threads = self.n_threads if n_threads is None else n_threads
        for k, nodes, bitsets in self.trees:
            self.traverse(
                nodes, X, bitsets, self.known_categories, self.feature_index, threads, out
            )
            columns[k] += out
        return raw


def lean_estimator(estimator: Any) -> Any:
    """`estimator` itself, or for a HistGradientBoosting regressor or classifier without
    categorical features a shallow copy whose ``_raw_predict`` is `LeanTrees`'s (its own
    ``predict``/``predict_proba`` then run as they are on those raw predictions)."""
    import copy

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if type(estimator) not in (HistGradientBoostingRegressor, HistGradientBoostingClassifier):
        return estimator
    try:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        if estimator.is_categorical_ is not None or estimator._preprocessor is not None:
            return estimator
        known, feature_index = estimator._bin_mapper.make_known_categories_bitsets()
        trees = tuple(
            (k, predictor.nodes, predictor.raw_left_cat_bitsets)
            for iteration in estimator._predictors
            for k, predictor in enumerate(iteration)
        )
        _ = estimator._baseline_prediction.dtype, estimator.n_trees_per_iteration_
    except (AttributeError, ImportError):  # another sklearn's internals
        return estimator
    lean = LeanTrees(
        estimator,
        trees,
        known,
        feature_index,
        _openmp_effective_n_threads(),
        _predict_from_raw_data,
    )
    fast = copy.copy(estimator)
    fast._raw_predict = lean.raw_predict
    return fast


def _names(columns: Any) -> bool:
    return isinstance(columns, Sequence | np.ndarray) and all(isinstance(c, str) for c in columns)


def _default_output(step: Any) -> bool:
    """Whether the step returns arrays (no ``set_output(transform="pandas")`` on it)."""
    config = getattr(step, "_sklearn_output_config", None) or {}
    return config.get("transform", "default") == "default"


def _block(transformer: Any, columns: tuple[str, ...]) -> OneHotColumns | _Passthrough | None:
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    if type(transformer) is FunctionTransformer or transformer == "passthrough":
        identity = transformer == "passthrough" or (
            transformer.func is None and not transformer.validate and _default_output(transformer)
        )
        return _Passthrough(columns) if identity else None
    if type(transformer) is not OneHotEncoder or not _default_output(transformer):
        return None
    categories = list(getattr(transformer, "categories_", []))
    infrequent = _infrequent(transformer)
    if (
        transformer.sparse_output
        or getattr(transformer, "drop_idx_", None) is not None
        or infrequent is None
        or any(group is not None for group in infrequent)
        or len(categories) != len(columns)
        or list(getattr(transformer, "feature_names_in_", columns)) != list(columns)
    ):
        return None
    if not all(c.dtype == object and all(type(v) is str for v in c) for c in categories):
        return None
    sizes = [len(c) for c in categories]
    return OneHotColumns(
        columns=columns,
        indexes=tuple({v: i for i, v in enumerate(c.tolist())} for c in categories),
        width=sum(sizes),
        offsets=tuple(int(o) for o in np.cumsum([0, *sizes[:-1]])),
        ignore_unknown=transformer.handle_unknown in ("ignore", "infrequent_if_exist"),
        dtype=transformer.dtype,
    )


def _infrequent(encoder: Any) -> list[Any] | None:
    """The encoder's infrequent categories per column (None entries: none), or None when
    it cannot say."""
    try:
        found = encoder.infrequent_categories_
    except AttributeError:  # grouping of infrequent categories not enabled
        return [None] * len(getattr(encoder, "categories_", []))
    return list(found) if found is not None else None
