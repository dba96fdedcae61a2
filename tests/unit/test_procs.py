"""The environment of the MLflow servers driftloop starts."""

from __future__ import annotations

import pytest

from config.settings import Settings
from driftloop import procs
from driftloop.stack import stack_env


def test_mlflow_servers_start_without_the_job_system_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.delenv(procs.MLFLOW_JOBS, raising=False)
    assert procs.mlflow_server_env() == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    assert stack_env(Settings(state_dir=tmp_path))[procs.MLFLOW_JOBS] == "false"
    monkeypatch.setenv(procs.MLFLOW_JOBS, "true")  # a user who runs MLflow's GenAI jobs
    assert procs.mlflow_server_env() == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
    assert stack_env(Settings(state_dir=tmp_path))[procs.MLFLOW_JOBS] == "true"
