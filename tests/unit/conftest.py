"""Shared unit fixtures: a throwaway SQLite MLflow store (no server) and a monitored model
staged on it (the monitor tests read windows, measure and act against it)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from config.names import CHALLENGER, CHAMPION
from config.settings import Settings
from registry import Registry

MONITORED_FEATURES = ["x1", "x2"]

Monitored = Callable[..., tuple[Settings, Registry]]


@pytest.fixture(autouse=True)
def restored_environment() -> Iterator[None]:
    """The CLI prepares the process environment (BENTOML_HOME, MLflow, Prefect): every
    unit test gets back the environment it started with."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A SQLite MLflow store with one run to register versions from."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t", artifact_location=(root / "art").as_uri())
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "not a model", "model/MLmodel")
    yield uri, run.info.run_id


@pytest.fixture
def monitored(tmp_path: Path, mlflow_store: tuple[str, str]) -> Monitored:
    """`monitored(model, **settings)`: settings, a registry with v1 champion and v2
    challenger (regression on x1, x2), and their schema and reference in the monitor's
    cache (what the monitor would otherwise download from the run)."""

    def stage(model: str, **extra: Any) -> tuple[Settings, Registry]:
        from pipelines.reference import monitor_dir

        uri, run_id = mlflow_store
        settings = Settings(model_name=model, state_dir=tmp_path, tracking_uri=uri, **extra)
        registry = Registry(model, uri)
        for _ in range(2):
            registry.register(f"runs:/{run_id}/model", run_id, {"family": "sklearn"})
        registry.set_alias(CHAMPION, 1, "first version")
        registry.set_alias(CHALLENGER, 2, "retrained")
        features = MONITORED_FEATURES
        schema = {"features": features, "categorical": [], "numeric": features}
        schema |= {"target": "y", "task": "regression"}
        rng = np.random.default_rng(1)
        reference = pd.DataFrame({"x1": rng.normal(0, 1, 2000), "x2": rng.normal(5, 2, 2000)})
        reference["prediction"] = 100 + 10 * reference["x1"]
        for version in ("1", "2"):
            cache = monitor_dir(settings) / f"v{version}"
            cache.mkdir(parents=True)
            (cache / "schema.json").write_text(json.dumps(schema))
            reference.to_parquet(cache / "reference.parquet")
        return settings, registry

    return stage


@pytest.fixture()
def lifecycle_model(
    mlflow_store: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """A fresh model on the session's store for CLI tests: versions 1-3, champion v1,
    challenger v2; the CLI's environment points at it (state folder in tmp_path)."""
    uri, run_id = mlflow_store
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DRIFTLOOP_TRACKING_URI", uri)
    monkeypatch.delenv("DRIFTLOOP_CANARY_SHARE", raising=False)
    monkeypatch.delenv("DRIFTLOOP_VERBOSE", raising=False)
    registry = Registry(f"lifecycle-{uuid.uuid4().hex[:8]}", uri)
    for _ in range(3):
        registry.register(f"runs:/{run_id}/model", run_id)
    registry.set_alias(CHAMPION, 1, "first")
    registry.set_alias(CHALLENGER, 2, "gate")
    return registry
