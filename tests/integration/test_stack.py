"""`driftloop up | status | down` for real: every component healthy over HTTP, and `down`
leaves no process behind."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
import psutil
import pytest
from mlflow import MlflowClient

from driftloop import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "driftloop")


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_up_serves_every_component_and_down_leaves_nothing(tmp_path: Path) -> None:
    ports = {name: procs.free_port() for name in ("MLFLOW", "PREFECT", "SERVE", "EVIDENTLY")}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
        },
        "DRIFTLOOP_STATE_DIR": str(tmp_path / "state"),
        **{f"DRIFTLOOP_{name}_PORT": str(port) for name, port in ports.items()},
    }
    started = run(env, "up")
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{ports['PREFECT']}" in started.stdout
    info = json.loads((tmp_path / "state" / "stack.json").read_text())
    root = psutil.Process(info["pid"])
    try:
        again = run(env, "up")
        assert again.returncode == 0 and "already running" in again.stdout

        mlflow_url = f"http://127.0.0.1:{ports['MLFLOW']}"
        prefect_api = f"http://127.0.0.1:{ports['PREFECT']}/api"
        assert httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{prefect_api}/health", timeout=5).status_code == 200
        evidently_url = f"http://127.0.0.1:{ports['EVIDENTLY']}"
        procs.wait_until(
            lambda: _answers(f"{evidently_url}/api/version"), 90, what="evidently ui /api/version"
        )
        assert (tmp_path / "state" / "evidently").is_dir()
        # The tracking server's SQLite store runs in WAL mode (config.mlflow_store).
        assert _journal_mode(tmp_path / "state" / "mlflow.db") == "wal"
        deployments = httpx.post(f"{prefect_api}/deployments/filter", json={}, timeout=10).json()
        assert {d["name"] for d in deployments} >= {"train", "monitor", "package"}

        def worker_online() -> bool:
            workers = httpx.post(
                f"{prefect_api}/work_pools/driftloop/workers/filter", json={}, timeout=5
            )
            return any(w["status"] == "ONLINE" for w in workers.json())

        procs.wait_until(worker_online, 90, what="a Prefect worker online in pool 'driftloop'")

        # The service starts once a champion exists.
        trained = run(env, "train", "--no-package")
        assert trained.returncode == 0, trained.stderr
        serve_url = f"http://127.0.0.1:{ports['SERVE']}"

        def ready() -> bool:
            try:
                return httpx.get(f"{serve_url}/readyz", timeout=3).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(ready, 180, what="bentoml serve /readyz")
        docs = httpx.get(f"{serve_url}/", timeout=5)  # BentoML's Swagger UI
        assert docs.status_code == 200 and "html" in docs.headers["content-type"]
        assert "/predict" in httpx.get(f"{serve_url}/docs.json", timeout=5).text
        status = run(env, "status")
        assert status.returncode == 0 and "champion v1" in status.stdout

        tree = [root, *root.children(recursive=True)]
        assert len(tree) >= 6  # honcho + mlflow + prefect + worker + serve + evidently (+ children)
        assert _job_runners(tree) == []  # MLflow's job system stays off in the stack
    finally:
        tree = [root, *root.children(recursive=True)] if root.is_running() else [root]
        stopped = run(env, "down")
    assert stopped.returncode == 0, stopped.stderr
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert alive == [], f"left running after `driftloop down`: {alive}"
    for port in ports.values():
        assert not procs.port_in_use(port)
    assert not (tmp_path / "state" / "stack.json").exists()


def _journal_mode(db: Path) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def test_mlflow_servers_run_without_mlflows_job_system(mlflow_server: procs.Server) -> None:
    """MLflow 3 starts huey job consumers (its GenAI jobs) beside the tracking server by
    default: 8 more processes, ~2 GB and ~35 s of CPU at each start here. driftloop's
    servers (this fixture starts one as `driftloop up` and the benchmarks do) run without."""
    server = psutil.Process(mlflow_server.process.pid)
    tree = [server, *server.children(recursive=True)]
    assert any("mlflow" in " ".join(_cmdline(p)) for p in tree)
    assert _job_runners(tree) == []
    assert len(tree) <= 3  # mlflow server → its uvicorn worker (+ a launcher shell)


def test_mlflow_servers_keep_their_store_in_wal_mode(mlflow_server: procs.Server) -> None:
    """The store was put in WAL mode before the server made its tables in it, and MLflow
    (its migrations, every write since) left it so: a registry write is one fsync'd
    append, and readers do not wait for writers."""
    db = mlflow_server.log_path.parent / "mlflow.db"  # the fixture's state folder
    MlflowClient(mlflow_server.base_url).search_experiments()  # the server answers
    assert db.is_file() and _journal_mode(db) == "wal"
    with closing(sqlite3.connect(db)) as conn:  # MLflow's tables are in this very file
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "registered_models", "model_versions"} <= tables


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _job_runners(tree: list[psutil.Process]) -> list[str]:
    """Command lines of MLflow job-runner processes (huey consumers) in `tree`."""
    return [" ".join(c) for c in map(_cmdline, tree) if any("huey" in part for part in c)]
