"""MLflow setup for flows: tracking URI and experiment, built from the settings."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient


def configure_mlflow(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at `tracking_uri` and make sure `experiment` exists; returns its id.

    With the embedded SQLite store the experiment's artifacts go to the state
    folder (`artifact_root`), so `mlflow ui --backend-store-uri <same sqlite>`
    shows runs and artifacts. A server decides its own artifact location.
    """
    if tracking_uri.startswith("sqlite:"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = (artifact_root / experiment).as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(experiment)  # created concurrently
        if found is None:
            raise
        return found.experiment_id
