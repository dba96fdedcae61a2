"""Start, health-check and stop the real servers (MLflow, Prefect, bentoml serve).

Used by the local stack (`driftloop up`) and by the integration tests, which
start the same processes on free ports in temporary folders.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from config.mlflow_store import use_wal


class ServerError(RuntimeError):
    """A server did not start, or did not become healthy in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def venv_bin(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Server:
    """A child process with a log file and an HTTP health URL."""

    name: str
    process: subprocess.Popen[bytes]
    health_url: str
    log_path: Path
    base_url: str

    def is_healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            return httpx.get(self.health_url, timeout=timeout_s).status_code < 500
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with code {self.process.returncode} before it was "
                    f"healthy; last log lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            return self.is_healthy()

        try:
            wait_until(healthy, timeout_s, interval_s=0.25, what=f"{self.name} healthy")
        except TimeoutError:
            raise ServerError(
                f"{self.name} not healthy at {self.health_url} after {timeout_s:.0f} s; "
                f"last log lines of {self.log_path}:\n{tail(self.log_path)}"
            ) from None

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process_group(self.process.pid, timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)

    def kill(self) -> None:
        """SIGKILL the server and every descendant at once (crash simulation).

        `bentoml serve` starts its workers in their own sessions, so killing the
        process group alone would leave them serving as orphans.
        """
        import psutil

        try:
            tree = [psutil.Process(self.process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def start_server(
    name: str,
    argv: Sequence[str],
    health_url: str,
    base_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Server:
    """Start `argv` in its own process group, logging to `log_path` (not waiting)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
    log.close()
    return Server(name, process, health_url, log_path, base_url)


def stop_process_group(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM a process group, then SIGKILL what is left after `timeout_s`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: not _group_alive(pid), timeout_s, interval_s=0.1, what=f"group {pid}")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive": reap it if it is our child.
    try:
        waited, _ = os.waitpid(pgid, os.WNOHANG)
        if waited == pgid:
            return _group_alive_after_reap(pgid)
    except ChildProcessError:
        pass
    return True


def _group_alive_after_reap(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def mlflow_server_argv(port: int, state: Path, backend_uri: str | None = None) -> list[str]:
    """`mlflow server` on SQLite (or `backend_uri`) + a local artifact folder, proxied.

    Clients reach artifacts through the server (`mlflow-artifacts:`), never its disk.
    """
    return [
        venv_bin("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri or f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination",
        str(state / "mlartifacts"),
        "--workers",
        "1",
    ]


# MLflow 3's server runs a job system (huey consumers for its GenAI features: scorers,
# prompt optimisation, trace rollups) by default. driftloop uses none of it, and on this
# 2-core machine it costs 8 more processes, ~2 GB of RSS and ~35 s of CPU in the first
# ~40 s of every server start (bench/README.md, "Session 16"): the CPU that the first
# requests, trainings and tests started beside it did not get.
MLFLOW_JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def mlflow_server_env() -> dict[str, str]:
    """The environment of an `mlflow server` driftloop starts: MLflow's job execution off
    unless the caller's environment sets `MLFLOW_SERVER_ENABLE_JOB_EXECUTION` itself."""
    return {MLFLOW_JOBS: os.environ.get(MLFLOW_JOBS, "false")}


def start_mlflow_server(
    name: str,
    port: int,
    state: Path,
    log_path: Path,
    backend_uri: str | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """`mlflow server` (`mlflow_server_argv`) with `mlflow_server_env`, not waiting: every
    MLflow server the tests and benchmarks start (the stack's comes from its Procfile).
    Its own SQLite store is put in WAL mode first (`config.mlflow_store`)."""
    if backend_uri is None:
        use_wal(state / "mlflow.db")
    return start_server(
        name,
        mlflow_server_argv(port, state, backend_uri),
        health_url=f"http://127.0.0.1:{port}/health",
        base_url=f"http://127.0.0.1:{port}",
        log_path=log_path,
        env={**(env or {}), **mlflow_server_env()},
    )


def prefect_server_env(
    state: Path, database_url: str | None = None, port: int | None = None
) -> dict[str, str]:
    """Prefect server settings: SQLite in `state`, or `database_url` (postgresql+asyncpg).

    `port`: the server's port, so that its UI calls its own API (the UI otherwise
    assumes port 4200 and shows "Can't connect to Server API")."""
    env = {
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            database_url or f"sqlite+aiosqlite:///{state / 'prefect' / 'prefect.db'}"
        ),
    }
    if port is not None:
        env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    return env


def prefect_server_argv(port: int) -> list[str]:
    return [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float | None,
    interval_s: float = 0.2,
    what: str = "",
) -> None:
    """Poll `predicate` every `interval_s` s until it holds: the one polling loop.

    The predicate is asked at least once, and once more at the deadline; `timeout_s`
    None waits for ever. It may raise to stop the wait early (a process that died).
    Past the deadline: TimeoutError naming `what` and the seconds waited.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not predicate():
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what or predicate}")
        left = interval_s if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(interval_s, left)))  # the last ask falls on the deadline


def answers_200(url: str, timeout_s: float = 2.0) -> bool:
    """Whether GET `url` answers 200 now (False when it cannot be reached)."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


# -- PostgreSQL (a throwaway cluster for tests and for trying the scaled-out setup) ------


@dataclass
class PostgresCluster:
    """A PostgreSQL server started from its own data folder on a free port."""

    folder: Path
    port: int
    user: str
    run_as: str | None  # the OS account the server runs as (initdb refuses root)

    def url(self, database: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL: driver `psycopg` (MLflow, prediction log) or `asyncpg` (Prefect)."""
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        _pg_run(self.run_as, [_pg_bin("createdb"), *self._conn(), name])
        return name

    def stop(self) -> None:
        data = self.folder / "data"
        _pg_run(self.run_as, [_pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"])

    def _conn(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]


def _pg_bin(name: str) -> str:
    """A PostgreSQL program: `pg_config --bindir` holds them all (initdb is not on PATH)."""
    import shutil

    config = shutil.which("pg_config")
    if config is not None:
        bindir = subprocess.run(
            [config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(bindir) / name).exists():
            return str(Path(bindir) / name)
    found = shutil.which(name)
    if found is None:
        raise ServerError(
            f"PostgreSQL's {name} was not found: install the PostgreSQL server "
            "(Debian: apt-get install postgresql) or put its bin folder on PATH"
        )
    return found


def _pg_run(run_as: str | None, argv: list[str]) -> None:
    full = ["runuser", "-u", run_as, "--", *argv] if run_as else argv
    done = subprocess.run(full, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ServerError(f"{' '.join(argv[:2])} failed: {(done.stderr or done.stdout)[-2000:]}")


def start_postgres(folder: Path, user: str = "driftloop") -> PostgresCluster:
    """initdb + start a cluster under `folder` on a free loopback port (trust auth).

    As root (CI, these machines) the server runs as the `postgres` account, which
    the Debian package creates; the folder is handed to it.
    """
    import pwd

    folder.mkdir(parents=True, exist_ok=True)
    run_as = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        run_as = account.pw_name
        for path in (folder, *folder.parents):
            if path == Path("/") or path.stat().st_mode & 0o001:
                continue
            os.chmod(path, path.stat().st_mode | 0o001)  # let it traverse to its folder
        os.chown(folder, account.pw_uid, account.pw_gid)
    data = folder / "data"
    _pg_run(
        run_as,
        [
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
    )
    port = free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
    _pg_run(
        run_as,
        [
            _pg_bin("pg_ctl"),
            "start",
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "pg.log"),
            "-w",
        ],
    )
    return PostgresCluster(folder, port, user, run_as)
