"""The model every benchmark serves: the product's sklearn family on the bundled Bikeshare data.

`prepare_model` fits it exactly as the training flow does (same features, same split, same
signature with numeric features as doubles), logs it to an MLflow store in a temp folder,
registers it as version 1 with the ``champion`` alias and imports it into a BentoML model
store there, so `bentoml serve` loads it without touching the network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_NAME = "bench-bikeshare"


@dataclass(frozen=True)
class PreparedModel:
    """Where the registered model lives and what to send it."""

    state: Path  # DRIFTLOOP_STATE_DIR: mlflow.db, mlartifacts, bentoml/
    tracking_uri: str
    model_name: str
    version: str
    local_model: Path  # the MLflow model folder (the FastAPI baseline loads this)
    features: list[str]
    records: list[dict[str, Any]]  # held-out rows as JSON-ready feature records
    seconds: float

    def body(self, n: int, start: int = 0) -> bytes:
        """A /predict body of n records."""
        rows = [self.records[(start + i) % len(self.records)] for i in range(n)]
        return json.dumps({"records": rows}).encode()


def prepare_model(state: Path, tracking_uri: str | None = None) -> PreparedModel:
    """Fit, log, register (champion) and import into BentoML under `state`."""
    from bench.common import preserved_environ

    with preserved_environ():
        return _prepare(state, tracking_uri)


def _prepare(state: Path, tracking_uri: str | None) -> PreparedModel:
    started = time.perf_counter()
    import mlflow
    from mlflow.models import infer_signature

    from bentos.store import bentoml_home, import_version
    from config.settings import Settings
    from data.sources import load_dataset, numeric_as_float
    from data.split import time_split
    from pipelines.families import FitConfig, fit_model
    from pipelines.tracking import configure_mlflow
    from registry import Registry

    state.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{state / 'mlflow.db'}"
    settings = Settings(state_dir=state, model_name=MODEL_NAME, tracking_uri=uri)
    snapshot = load_dataset(settings.dataset_spec(), settings.task)
    train, holdout = time_split(snapshot.frame, snapshot.time_column, 0.2, seed=42)
    features = list(snapshot.features)
    config = FitConfig(
        task=snapshot.task, categorical=snapshot.categorical, numeric=snapshot.numeric, seed=42
    )
    fitted = fit_model("sklearn", config, train[features], train[snapshot.target])
    served = numeric_as_float(holdout[features], snapshot.numeric)
    predictions = fitted.predict(served)
    experiment = configure_mlflow(uri, f"{MODEL_NAME}-bench", state / "mlartifacts")
    with mlflow.start_run(experiment_id=experiment) as run:
        signature = infer_signature(served.head(200), predictions[:200])
        info = fitted.log_model("model", input_example=served.head(5), signature=signature)
    registry = Registry(MODEL_NAME, uri)
    version = registry.register(info.model_uri, run.info.run_id, {"family": "sklearn"}).version
    registry.set_alias("champion", version, reason="benchmark", actor="bench")
    local = registry.download_model(version, state / "model-download")
    with bentoml_home(state / "bentoml"):
        import_version(registry, version)
    records = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in served.to_dict(orient="records")
    ]
    return PreparedModel(
        state=state,
        tracking_uri=uri,
        model_name=MODEL_NAME,
        version=version,
        local_model=local,
        features=features,
        records=records,
        seconds=time.perf_counter() - started,
    )
