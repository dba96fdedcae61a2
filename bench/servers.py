"""Start and always stop the servers a benchmark loads: `bentoml serve`, uvicorn, MLflow.

Each server runs in its own process group in a temp folder; `stop_tree` ends it and every
descendant it started (BentoML puts its workers in their own sessions), by pid.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import QUIET_ENV, REPO
from driftloop import procs


def stop_tree(server: procs.Server, timeout_s: float = 15.0) -> None:
    """SIGTERM the server's group, then kill whatever of its tree is still alive."""
    import psutil

    try:
        tree = [psutil.Process(server.process.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    server.stop(timeout_s)
    _, alive = psutil.wait_procs(tree, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def wait_ready(server: procs.Server, timeout_s: float, path_ok: str = "/readyz") -> None:
    """Until GET `path_ok` answers 200 (the model is loaded), or ServerError."""

    def ready() -> bool:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise procs.ServerError(
                f"{server.name} exited ({code}):\n{procs.tail(server.log_path)}"
            )
        try:
            return httpx.get(server.base_url + path_ok, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        procs.wait_until(ready, timeout_s, 0.25, f"{server.name} to be ready")
    except TimeoutError as exc:
        raise procs.ServerError(f"{exc}; log:\n{procs.tail(server.log_path)}") from exc


def _start(
    name: str,
    argv: list[str],
    port: int,
    state: Path,
    health: str,
    api: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> procs.Server:
    """Start one server on 127.0.0.1:`port`, logging to `state`/`name`.log (not waiting)."""
    return procs.start_server(
        name,
        argv,
        health_url=f"http://127.0.0.1:{port}{health}",
        base_url=f"http://127.0.0.1:{port}{api}",
        log_path=state / f"{name}.log",
        env={**QUIET_ENV, **(env or {})},
        cwd=cwd,
    )


@contextlib.contextmanager
def _stopped_after(
    server: procs.Server, ready: Callable[[procs.Server], object]
) -> Iterator[procs.Server]:
    """Wait with `ready(server)`, hand the server out, and stop its tree however it ends."""
    try:
        ready(server)
        yield server
    finally:
        stop_tree(server)


def checkout_bentos(commit: str, dest: Path) -> Path | None:
    """`bentos/` as it was at `commit`, extracted under `dest` (None without git history)."""
    return dest if checkout(commit, dest, ("bentos",)) else None


def checkout(ref: str, dest: Path, folders: tuple[str, ...]) -> bool:
    """`folders` as they are at git `ref`, extracted under `dest`; False without git."""
    import io
    import subprocess
    import tarfile

    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, *folders],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return True


@contextlib.contextmanager
def driftloop_server(
    name: str,
    state: Path,
    settings: Any,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    code: Path | None = None,
) -> Iterator[procs.Server]:
    """`bentoml serve bentos.service:DriftloopService` as `driftloop serve` starts it.

    `code`: a folder holding another `bentos/` (e.g. from `checkout_bentos`) to serve
    instead of the working tree's; the rest of the project comes from the working tree.
    """
    from driftloop.serving import serve_command

    port = procs.free_port()
    argv, serve_env, cwd = serve_command(settings, port)
    if code is not None:
        cwd = code
        serve_env["PYTHONPATH"] = f"{code}:{REPO}"
    server = _start(name, argv, port, state, "/healthz", env={**serve_env, **(env or {})}, cwd=cwd)
    with _stopped_after(server, lambda s: wait_ready(s, timeout_s)):
        yield server


@contextlib.contextmanager
def fastapi_server(
    name: str, state: Path, model_path: Path, timeout_s: float = 90.0
) -> Iterator[procs.Server]:
    """The baseline FastAPI wrapper under uvicorn (1 worker, access log off)."""
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.serving.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {"BENCH_MODEL_PATH": str(model_path), "PYTHONPATH": str(REPO)}
    server = _start(name, argv, port, state, "/healthz", env=env, cwd=REPO)
    with _stopped_after(server, lambda s: wait_ready(s, timeout_s, "/healthz")):
        yield server


@contextlib.contextmanager
def mlflow_server(state: Path, timeout_s: float = 120.0) -> Iterator[procs.Server]:
    port = procs.free_port()
    (state / "mlflow").mkdir(parents=True, exist_ok=True)
    server = procs.start_mlflow_server(
        "mlflow", port, state / "mlflow", state / "mlflow.log", env=QUIET_ENV
    )
    with _stopped_after(server, lambda s: s.wait_healthy(timeout_s)):
        yield server


SERVER_PIDS_ENV = "DRIFTLOOP_BENCH_SERVER_PIDS"


@contextlib.contextmanager
def tracking_servers(state: Path, timeout_s: float = 150.0) -> Iterator[dict[str, str]]:
    """A real `mlflow server` and `prefect server`, started side by side; their URLs/env,
    and in ``SERVER_PIDS_ENV`` their pids (``mlflow=<pid>,prefect=<pid>``: a benchmark
    reads the CPU time their process trees spend on its work)."""
    mlflow_port, prefect_port = procs.free_port(), procs.free_port()
    (state / "mlflow").mkdir(parents=True, exist_ok=True)
    (state / "prefect-server" / "prefect").mkdir(parents=True, exist_ok=True)
    started: list[procs.Server] = []
    try:
        started.append(
            procs.start_mlflow_server(
                "mlflow", mlflow_port, state / "mlflow", state / "mlflow.log", env=QUIET_ENV
            )
        )
        prefect_argv = procs.prefect_server_argv(prefect_port)
        prefect_env = procs.prefect_server_env(state / "prefect-server")
        started.append(
            _start("prefect", prefect_argv, prefect_port, state, "/api/health", "/api", prefect_env)
        )
        for server in started:
            server.wait_healthy(timeout_s)
        yield {
            "MLFLOW_TRACKING_URI": started[0].base_url,
            "PREFECT_API_URL": started[1].base_url,
            # The client side of Prefect keeps its own home (and settings) in the temp folder.
            "PREFECT_HOME": str(state / "prefect-client"),
            SERVER_PIDS_ENV: f"mlflow={started[0].process.pid},prefect={started[1].process.pid}",
        }
    finally:
        for server in reversed(started):
            stop_tree(server)
