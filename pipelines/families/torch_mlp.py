"""The torch family: sklearn preprocessing → a small MLP, early-stopped on a validation split.

Imported only when the torch family is asked for, so the rest of driftloop never pays for
importing torch. Training is deterministic for a seed on a given machine: it runs with
deterministic algorithms, one thread and a forked RNG (the caller's torch state is left
as it was). The served model is ``mlp_pyfunc.py`` logged as an MLflow model from code.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import skops.io
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from torch import nn

from pipelines.families import mlp_pyfunc
from pipelines.families.base import (
    FitConfig,
    FittedModel,
    check_fit_inputs,
    log_without_serving_check,
)
from pipelines.families.mlp_pyfunc import META_FORMAT, MLPScorer, build_mlp

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

HIDDEN = [64, 32]
DROPOUT = 0.1
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-5
BATCH_SIZE = 256
MAX_CATEGORIES = 64
# One thread: fast enough for a net this small, and the same sums in the same order
# whatever the machine's core count.
TRAIN_THREADS = 1


class TorchModel(FittedModel):
    """A fitted MLP with its preprocessor; predicts through the served ``MLPScorer``."""

    family = "torch"

    def __init__(
        self,
        config: FitConfig,
        scorer: MLPScorer,
        params: dict[str, Any],
        history: dict[str, list[float]],
    ) -> None:
        self.task = config.task
        self.config = config
        self.scorer = scorer
        self.params = params
        self.classes = None if scorer.classes is None else scorer.classes.tolist()
        self._history = history

    @property
    def predictor(self) -> MLPScorer:
        return self.scorer

    def history(self) -> dict[str, list[float]] | None:
        return {key: list(values) for key, values in self._history.items()}

    def _log_model(self, name: str, **common: Any) -> ModelInfo:
        import mlflow.pyfunc

        with tempfile.TemporaryDirectory(prefix="driftloop-mlp-") as folder:
            artifacts = self.save_artifacts(Path(folder))
            return log_without_serving_check(
                mlflow.pyfunc,
                "pyfunc.ModelFromCode",  # what pyfunc.log_model records for a code model
                name,
                python_model=mlp_pyfunc.__file__,
                artifacts=artifacts,
                **common,
            )

    def save_artifacts(self, folder: Path) -> dict[str, str]:
        """Write the preprocessor, weights and meta the served model loads; returns paths."""
        paths = {
            "preprocessor": folder / "preprocessor.skops",
            "weights": folder / "weights.pt",
            "meta": folder / "meta.json",
        }
        skops.io.dump(self.scorer.preprocessor, paths["preprocessor"])
        torch.save(self.scorer.net.state_dict(), paths["weights"])
        paths["meta"].write_text(json.dumps(self.scorer.meta, indent=2))
        return {key: str(path) for key, path in paths.items()}


def fit_torch(
    config: FitConfig,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_valid: pd.DataFrame | None = None,
    y_valid: pd.Series | None = None,
) -> TorchModel:
    """Fit preprocessor and MLP; early-stop on the validation rows and keep the best epoch.

    Without a validation split the last ``config.valid_fraction`` of the training rows is
    held out (rows are assumed ordered in time, so validation is the most recent data).
    """
    X_train, y_train, X_valid, y_valid = _validation_split(
        config, X_train, y_train, X_valid, y_valid
    )
    preprocessor = build_preprocessor(config)
    x_train = np.asarray(preprocessor.fit_transform(X_train[config.features]), dtype=np.float32)
    x_valid = np.asarray(preprocessor.transform(X_valid[config.features]), dtype=np.float32)
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "task": config.task,
        "features": config.features,
        "n_inputs": int(x_train.shape[1]),
        "hidden": HIDDEN,
        "dropout": DROPOUT,
    }
    target_meta, t_train, t_valid, loss_fn = _targets(config.task, y_train, y_valid)
    meta |= target_meta
    with _deterministic_torch(config.seed):
        net = build_mlp(meta["n_inputs"], HIDDEN, meta["n_outputs"], DROPOUT)
        best_epoch, history = _train(
            net,
            loss_fn,
            torch.from_numpy(x_train),
            t_train,
            torch.from_numpy(x_valid),
            t_valid,
            config,
        )
    params = _fit_params(config, best_epoch, history, meta["n_inputs"], len(x_train), len(x_valid))
    return TorchModel(config, MLPScorer(preprocessor, net, meta), params, history)


def _validation_split(
    config: FitConfig,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_valid: pd.DataFrame | None,
    y_valid: pd.Series | None,
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """The checked training and validation rows; without validation rows, the last
    ``config.valid_fraction`` of the training rows."""
    check_fit_inputs(config, X_train, y_train)
    if (X_valid is None) != (y_valid is None):
        raise ValueError("pass both X_valid and y_valid, or neither")
    if X_valid is None or y_valid is None:
        n_valid = max(1, round(len(X_train) * config.valid_fraction))
        if len(X_train) - n_valid < 2:
            raise ValueError(f"{len(X_train)} training rows are too few to hold out validation")
        X_train, X_valid = X_train.iloc[:-n_valid], X_train.iloc[-n_valid:]
        y_train, y_valid = y_train.iloc[:-n_valid], y_train.iloc[-n_valid:]
    check_fit_inputs(config, X_valid, y_valid, what="validation")
    return X_train, y_train, X_valid, y_valid


def _targets(
    task: str, y_train: pd.Series, y_valid: pd.Series
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, nn.Module]:
    """(meta of the output layer, training targets, validation targets, loss): class
    indices and cross-entropy, or the standardised target and squared error."""
    if task == "classification":
        classes = np.unique(np.concatenate([np.asarray(y_train), np.asarray(y_valid)]))
        meta = {
            "n_outputs": len(classes),
            "classes": classes.tolist(),
            "classes_dtype": classes.dtype.str,
        }
        t_train = torch.from_numpy(np.searchsorted(classes, np.asarray(y_train)))
        t_valid = torch.from_numpy(np.searchsorted(classes, np.asarray(y_valid)))
        return meta, t_train, t_valid, nn.CrossEntropyLoss()
    target = np.asarray(y_train, dtype=np.float64)
    mean, std = float(target.mean()), float(target.std())
    std = std if std > 0 else 1.0
    meta = {"n_outputs": 1, "target_mean": mean, "target_std": std}
    t_train, t_valid = _scaled_target(y_train, mean, std), _scaled_target(y_valid, mean, std)
    return meta, t_train, t_valid, nn.MSELoss()


def _fit_params(
    config: FitConfig,
    best_epoch: int,
    history: dict[str, list[float]],
    n_inputs: int,
    n_train: int,
    n_valid: int,
) -> dict[str, Any]:
    """The hyper-parameters and what training found, logged as the run's ``model.*``."""
    return {
        "hidden": ",".join(str(size) for size in HIDDEN),
        "dropout": DROPOUT,
        "learning_rate": LEARNING_RATE,
        "weight_decay": WEIGHT_DECAY,
        "batch_size": BATCH_SIZE,
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "seed": config.seed,
        "best_epoch": best_epoch,
        "epochs_trained": len(history["train_loss"]),
        "n_inputs": n_inputs,
        "n_train": n_train,
        "n_valid": n_valid,
    }


def build_preprocessor(config: FitConfig) -> ColumnTransformer:
    """Median-imputed, standardised numerics and one-hot categoricals (unknowns ignored)."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = OneHotEncoder(
        handle_unknown="ignore", sparse_output=False, max_categories=MAX_CATEGORIES
    )
    return ColumnTransformer(
        [
            ("categorical", categorical, list(config.categorical)),
            ("numeric", numeric, list(config.numeric)),
        ],
        remainder="drop",
    )


def _scaled_target(y: pd.Series, mean: float, std: float) -> torch.Tensor:
    values = (np.asarray(y, dtype=np.float64) - mean) / std
    return torch.from_numpy(values.astype(np.float32)).unsqueeze(1)


def _train(
    net: nn.Module,
    loss_fn: nn.Module,
    x_train: torch.Tensor,
    t_train: torch.Tensor,
    x_valid: torch.Tensor,
    t_valid: torch.Tensor,
    config: FitConfig,
) -> tuple[int, dict[str, list[float]]]:
    """Mini-batch Adam with early stopping; loads the best epoch's weights into ``net``.

    Returns the best epoch (1-based) and the per-epoch mean train and valid losses.
    """
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    history: dict[str, list[float]] = {"train_loss": [], "valid_loss": []}
    best_loss, best_epoch = float("inf"), 0
    best_state = {key: value.clone() for key, value in net.state_dict().items()}
    n = len(x_train)
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        total = 0.0
        for batch in torch.randperm(n).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = loss_fn(net(x_train[batch]), t_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        net.eval()
        with torch.inference_mode():
            valid_loss = float(loss_fn(net(x_valid), t_valid))
        history["train_loss"].append(total / n)
        history["valid_loss"].append(valid_loss)
        if valid_loss < best_loss:
            best_loss, best_epoch = valid_loss, epoch
            best_state = {key: value.clone() for key, value in net.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return best_epoch, history


@contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded, deterministic, single-threaded torch; restores the caller's settings."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(TRAIN_THREADS)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)
