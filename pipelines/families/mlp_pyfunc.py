"""The served torch MLP: an MLflow "model from code" file, self-contained on purpose.

MLflow copies this file into the logged model and runs it at load time, so a serving
process (BentoML, ``mlflow models serve``) needs only the pinned pip requirements, never
driftloop's own code, and no Python code is pickled. It imports nothing of ours.

The training code imports ``build_mlp`` and ``MLPScorer`` from here, so in-process and
served predictions run the very same code. Artifacts the model reads:

- ``preprocessor``: the fitted sklearn ColumnTransformer, saved with skops;
- ``weights``: the torch ``state_dict`` (loaded with ``weights_only=True``);
- ``meta``: JSON with the architecture, target scaling and classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import skops.io
import torch
from mlflow.models import set_model
from torch import nn

META_FORMAT = 1

# Types in a fitted imputer/scaler/one-hot ColumnTransformer that skops does not trust
# by default (found with `skops.io.get_untrusted_types`).
PREPROCESSOR_TRUSTED_TYPES = ["numpy.dtype"]


def build_mlp(n_inputs: int, hidden: list[int], n_outputs: int, dropout: float) -> nn.Sequential:
    """Linear → ReLU → Dropout blocks, then a linear head (logits or a scaled number)."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


class MLPScorer:
    """Preprocessor + network + meta: turns a feature frame into predictions."""

    def __init__(self, preprocessor: Any, net: nn.Module, meta: dict[str, Any]) -> None:
        self.preprocessor = preprocessor
        self.net = net.eval()
        self.meta = meta
        classes = meta.get("classes")
        self.classes = (
            None if classes is None else np.asarray(classes, dtype=np.dtype(meta["classes_dtype"]))
        )

    @classmethod
    def load(cls, preprocessor_path: str, weights_path: str, meta_path: str) -> MLPScorer:
        """Rebuild from the three artifacts without unpickling any code."""
        meta = json.loads(Path(meta_path).read_text())
        if meta.get("format") != META_FORMAT:
            raise ValueError(f"{meta_path}: unsupported MLP meta format {meta.get('format')!r}")
        preprocessor = skops.io.load(preprocessor_path, trusted=PREPROCESSOR_TRUSTED_TYPES)
        net = build_mlp(meta["n_inputs"], meta["hidden"], meta["n_outputs"], meta["dropout"])
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        return cls(preprocessor, net, meta)

    def outputs(self, X: pd.DataFrame) -> np.ndarray:
        """Raw network outputs (scaled numbers or logits) for a frame."""
        matrix = np.asarray(self.preprocessor.transform(X), dtype=np.float32)
        with torch.inference_mode():
            return self.net(torch.from_numpy(matrix)).numpy()

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Numbers in the target's units, or class labels in their original type."""
        out = self.outputs(X)
        if self.classes is None:
            scaled = out[:, 0].astype(np.float64)
            return scaled * self.meta["target_std"] + self.meta["target_mean"]
        return self.classes[out.argmax(axis=1)]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Softmax class probabilities, columns in the order of ``classes``."""
        logits = torch.from_numpy(self.outputs(X))
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)


class TabularMLPModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of ``MLPScorer``."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        artifacts = context.artifacts
        self.scorer = MLPScorer.load(
            artifacts["preprocessor"], artifacts["weights"], artifacts["meta"]
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        return self.scorer.predict(model_input)

    @property
    def classes(self) -> list[Any] | None:
        """The class labels in the order of ``predict_proba``'s columns; None for regression."""
        classes = self.scorer.classes
        return None if classes is None else classes.tolist()

    def predict_proba(self, model_input: pd.DataFrame) -> np.ndarray:
        """Class probabilities (serving reaches this through ``unwrap_python_model``)."""
        if self.scorer.classes is None:
            raise ValueError("a regression model has no class probabilities")
        return self.scorer.predict_proba(model_input)


# MLflow runs this file as a standalone module (no package); training code imports it as
# part of the package and must not register a model as a side effect.
if not __package__:
    set_model(TabularMLPModel())
