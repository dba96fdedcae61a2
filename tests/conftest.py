"""Shared test setup: keep every tool's home inside a temporary folder."""

from __future__ import annotations

import os

import pytest

# Set before any test module imports prefect/mlflow/bentoml: no analytics, and no
# writes to the developer's real homes.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow ignores DO_NOT_TRACK=1
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(autouse=True)
def _no_driftloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the DRIFTLOOP_* variables they set themselves."""
    for key in list(os.environ):
        if key.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(key)
