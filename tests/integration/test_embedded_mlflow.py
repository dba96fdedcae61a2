"""Embedded mode (no stack, no MLFLOW_TRACKING_URI): the monitor reads a new champion's
artifacts through the resolved tracking URI, not MLflow's global default.

Before the fix the first check of every new champion failed with
`Run with id=… not found` and left an empty ./mlflow.db in the working folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "embedded-demand"


def _register_version(tracking_uri: str, artifacts: Path) -> str:
    """One registered version with the artifacts the monitor reads (as training logs them)."""
    frame = pd.DataFrame({"temp": np.linspace(0.0, 1.0, 50), "hum": np.linspace(1.0, 0.0, 50)})
    frame["count"] = 3.0 * frame["temp"] + 1.0
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("embedded", artifact_location=artifacts.as_uri())
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_dict(
                {
                    "features": ["temp", "hum"],
                    "categorical": [],
                    "numeric": ["temp", "hum"],
                    "target": "count",
                    "task": "regression",
                },
                "schema.json",
            )
            sample = artifacts.parent / "train_sample.parquet"
            frame.to_parquet(sample)
            mlflow.log_artifact(str(sample), "reference")
            model = LinearRegression().fit(frame[["temp", "hum"]], frame["count"])
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        version = mlflow.register_model(info.model_uri, MODEL)
    finally:
        mlflow.set_tracking_uri("")  # the checking process must not inherit anything
    return str(version.version)


def test_monitor_reads_new_champion_artifacts_without_tracking_env(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    tracking_uri = f"sqlite:///{state / 'mlflow.db'}"
    version = _register_version(tracking_uri, tmp_path / "artifacts")

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    script = f"""
import json
from config.settings import Settings
from pipelines.reference import reference_of, schema_of
from registry import Registry

settings = Settings(state_dir={str(state)!r}, model_name={MODEL!r})
info = Registry({MODEL!r}, settings.resolved_tracking_uri()).get({version!r})
schema = schema_of(info, settings)
reference = reference_of(info, settings, schema)
print(json.dumps({{"target": schema["target"], "rows": len(reference),
                  "first": float(reference["prediction"].iloc[0])}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DRIFTLOOP_"))}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["target"] == "count"
    assert figures["rows"] == 50
    assert figures["first"] == pytest.approx(1.0, abs=1e-6)  # 3 * temp(0) + 1
    assert not (workdir / "mlflow.db").exists(), "MLflow's global default URI was used"
    assert not (workdir / "mlruns").exists()
