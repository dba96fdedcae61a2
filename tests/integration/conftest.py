"""Real servers for integration tests: started once per session on free ports in
temporary folders, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop import procs


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def mlflow_server(stack_dir: Path) -> Iterator[procs.Server]:
    """A real `mlflow server` (SQLite + local artifacts) for the whole session."""
    port = procs.free_port()
    state = stack_dir / "mlflow"
    state.mkdir()
    server = procs.start_mlflow_server("mlflow", port, state, state / "mlflow.log")
    try:
        server.wait_healthy(timeout_s=120)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_server(stack_dir: Path) -> Iterator[procs.Server]:
    """A real `prefect server` (SQLite, analytics off) for the whole session."""
    port = procs.free_port()
    state = stack_dir / "prefect-server"
    (state / "prefect").mkdir(parents=True)
    server = procs.start_server(
        "prefect",
        procs.prefect_server_argv(port),
        health_url=f"http://127.0.0.1:{port}/api/health",
        base_url=f"http://127.0.0.1:{port}/api",
        log_path=state / "prefect.log",
        env=procs.prefect_server_env(state, port=port),
    )
    try:
        server.wait_healthy(timeout_s=120)
        yield server
    finally:
        server.stop()
