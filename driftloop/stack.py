"""The local stack: `driftloop up | down | status`.

Process supervision is honcho's (a maintained Procfile runner): `up` writes a
Procfile into the state folder and starts `honcho start` in the background; honcho
starts MLflow, Prefect, a Prefect process worker and `bentoml serve` (which waits
for a champion), prefixes and forwards their output, and stops them all together.
driftloop adds what honcho does not do: free-port checks before starting, health
checks over HTTP (not sleeps), deploying `prefect.yaml`, per-component log files,
a state file with the URLs, and a `down` that stops exactly the processes `up` started.
"""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from config.mlflow_env import mlflow_http_env
from config.mlflow_store import use_wal
from config.settings import REPO_ROOT, Settings
from driftloop import procs
from driftloop.stackfile import read_stack, stack_file, write_stack


class StackError(RuntimeError):
    """The stack cannot be started or stopped as asked; the message says how to fix it."""


@dataclass(frozen=True)
class Component:
    name: str
    health_url: str | None
    ui_url: str | None


def components(settings: Settings) -> list[Component]:
    mlflow = f"http://127.0.0.1:{settings.mlflow_port}"
    prefect = f"http://127.0.0.1:{settings.prefect_port}"
    serve = f"http://127.0.0.1:{settings.serve_port}"
    evidently = f"http://127.0.0.1:{settings.evidently_port}"
    return [
        Component("mlflow", f"{mlflow}/health", mlflow),
        Component("prefect", f"{prefect}/api/health", prefect),
        Component("worker", None, f"{prefect}/work-pools/work-pool/{settings.work_pool}"),
        Component("serve", f"{serve}/healthz", f"{serve}/"),
        Component("evidently", f"{evidently}/api/version", evidently),
    ]


def evidently_ui_argv(port: int, workspace: Path) -> list[str]:
    """`evidently ui` over the local workspace the monitor feeds (drift over time)."""
    return [
        procs.venv_bin("evidently"),
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        str(workspace),
    ]


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment every component and every flow run shares."""
    state = settings.state_path
    return {
        "DRIFTLOOP_STATE_DIR": str(state),
        "DRIFTLOOP_MODEL_NAME": settings.model_name,
        "DRIFTLOOP_REPO": str(REPO_ROOT),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.mlflow_port}",
        "PREFECT_API_URL": f"http://127.0.0.1:{settings.prefect_port}/api",
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"sqlite+aiosqlite:///{state / 'prefect' / 'prefect.db'}"
        ),
        "BENTOML_HOME": str(state / "bentoml"),
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow ignores DO_NOT_TRACK=1
        **procs.mlflow_server_env(),  # no job-system processes beside the tracking server
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        **mlflow_http_env(),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def procfile(settings: Settings) -> str:
    """One line per component; each also appends to its own log file."""
    state = settings.state_path
    logs = state / "logs"
    bin_dir = Path(sys.executable).parent
    q = shlex.quote
    prefect_url = f"http://127.0.0.1:{settings.prefect_port}/api/health"
    mlflow_argv = " ".join(q(a) for a in procs.mlflow_server_argv(settings.mlflow_port, state))
    lines = {
        "mlflow": f"exec {mlflow_argv}",
        "prefect": f"exec {q(str(bin_dir / 'prefect'))} server start --host 127.0.0.1 "
        f"--port {settings.prefect_port}",
        "worker": f"{q(str(bin_dir / 'driftloop'))} wait-for {q(prefect_url)} && exec "
        f"{q(str(bin_dir / 'prefect'))} worker start --pool {q(settings.work_pool)} "
        "--type process",
        "serve": f"exec {q(str(bin_dir / 'driftloop'))} serve --wait-for-champion "
        f"--port {settings.serve_port}",
        "evidently": "exec "
        + " ".join(
            q(a) for a in evidently_ui_argv(settings.evidently_port, settings.evidently_workspace())
        ),
    }
    return "".join(
        f"{name}: {command} >> {q(str(logs / (name + '.log')))} 2>&1\n"
        for name, command in lines.items()
    )


def _alive(info: dict[str, Any] | None) -> bool:
    if not info or "pid" not in info:
        return False
    try:
        process = psutil.Process(int(info["pid"]))
    except psutil.NoSuchProcess:
        return False
    return process.status() != psutil.STATUS_ZOMBIE and process.create_time() == info.get(
        "pid_create_time"
    )


def up(
    settings: Settings,
    timeout_s: float = 180.0,
    deploy: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Start the stack (harmless when it already runs); returns the stack info.

    `extra_env` is given to every component on top of this process's environment and
    the stack's own (the demo's canary share and guards reach the worker and the service
    this way)."""
    state = settings.state_path
    existing = read_stack(state)
    if _alive(existing):
        assert existing is not None
        existing["already_running"] = True
        return existing
    _check_ports_free(settings)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "prefect").mkdir(parents=True, exist_ok=True)
    settings.evidently_workspace().mkdir(parents=True, exist_ok=True)
    use_wal(state / "mlflow.db")  # before the tracking server opens it (config.mlflow_store)
    procfile_path = state / "Procfile"
    procfile_path.write_text(procfile(settings))
    env = {**os.environ, **stack_env(settings), **(extra_env or {})}
    process = _start_honcho(procfile_path, env, state / "logs" / "honcho.log")
    info: dict[str, Any] = {
        "pid": process.pid,
        "pid_create_time": psutil.Process(process.pid).create_time(),
        "started_at": time.time(),
        "mlflow_tracking_uri": env["MLFLOW_TRACKING_URI"],
        "prefect_api_url": env["PREFECT_API_URL"],
        "serve_url": f"http://127.0.0.1:{settings.serve_port}",
        "evidently_url": f"http://127.0.0.1:{settings.evidently_port}",
        "model_name": settings.model_name,
        "ports": list(_ports(settings).values()),
    }
    write_stack(state, info)
    try:
        for component in components(settings):
            if component.name in ("mlflow", "prefect"):
                _wait_component(component, process, state, timeout_s)
        if deploy:
            deploy_flows(settings, env)
        if settings.alert_webhook_url:
            info["alerts"] = configure_alerts(settings, env["PREFECT_API_URL"])
            write_stack(state, info)
    except Exception:
        down(settings)
        raise
    return info


def _ports(settings: Settings) -> dict[str, int]:
    """The stack's ports by component, in start order."""
    return {
        "mlflow": settings.mlflow_port,
        "prefect": settings.prefect_port,
        "serve": settings.serve_port,
        "evidently": settings.evidently_port,
    }


def _check_ports_free(settings: Settings) -> None:
    """StackError naming every stack port another program holds."""
    busy = [(name, port) for name, port in _ports(settings).items() if procs.port_in_use(port)]
    if busy:
        detail = ", ".join(f"{name} port {port}" for name, port in busy)
        raise StackError(
            f"cannot start the stack: {detail} already in use by another program. Stop it, "
            "or choose other ports with DRIFTLOOP_MLFLOW_PORT / DRIFTLOOP_PREFECT_PORT / "
            "DRIFTLOOP_SERVE_PORT / DRIFTLOOP_EVIDENTLY_PORT."
        )


def _start_honcho(
    procfile_path: Path, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """honcho running the Procfile in its own process group, its output appended to the log."""
    honcho_log = log_path.open("ab")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "honcho"),
            "start",
            "-f",
            str(procfile_path),
            "-d",
            str(REPO_ROOT),
            "--no-colour",
        ],
        stdout=honcho_log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(REPO_ROOT),
        start_new_session=True,
    )
    honcho_log.close()
    return process


def _wait_component(
    component: Component, process: subprocess.Popen[bytes], state: Path, timeout_s: float
) -> None:
    assert component.health_url
    health_url, log_file = component.health_url, state / "logs" / f"{component.name}.log"

    def healthy() -> bool:
        if process.poll() is not None:
            raise StackError(
                f"the stack stopped while {component.name} was starting; see "
                f"{log_file}:\n{procs.tail(log_file)}"
            )
        return procs.answers_200(health_url)

    try:
        procs.wait_until(healthy, timeout_s, interval_s=0.3, what=f"{component.name} healthy")
    except TimeoutError:
        raise StackError(
            f"{component.name} not healthy at {health_url} after {timeout_s:.0f} s; see {log_file}"
        ) from None


PREFECT_FILE = REPO_ROOT / "prefect.yaml"
GIT_CLONE_STEP = "prefect.deployments.steps.git_clone"


def render_deployments(
    settings: Settings,
    source: Path = PREFECT_FILE,
    git_url: str | None = None,
    git_branch: str | None = None,
) -> dict[str, Any]:
    """prefect.yaml with the settings' work pool, monitor interval and train family.

    Every deployment goes to ``work_pool``; a ``family`` parameter becomes ``family``; an
    interval schedule becomes ``monitor_interval_s``. With `git_url` the pull steps are
    the file's ``definitions.pull.git`` steps (clone, then run from the clone) instead of
    running from the worker's DRIFTLOOP_REPO folder.
    """
    if not source.is_file():
        raise StackError(
            f"no {source.name} at {source}: deploy from a driftloop checkout "
            "(an installed package does not ship it), or pass its path."
        )
    config = yaml.safe_load(source.read_text()) or {}
    for deployment in config.get("deployments") or []:
        deployment.setdefault("work_pool", {})["name"] = settings.work_pool
        parameters = deployment.get("parameters") or {}
        if "family" in parameters:
            parameters["family"] = settings.family
        for schedule in deployment.get("schedules") or []:
            if "interval" in schedule:
                schedule["interval"] = settings.monitor_interval_s
    if git_url:
        try:
            steps = copy.deepcopy(config["definitions"]["pull"]["git"])
            clone = next(step[GIT_CLONE_STEP] for step in steps if GIT_CLONE_STEP in step)
        except (KeyError, TypeError, StopIteration):
            raise StackError(
                f"{source} has no definitions.pull.git steps with a {GIT_CLONE_STEP} step"
            ) from None
        clone["repository"] = git_url
        if git_branch:
            clone["branch"] = git_branch
        else:
            clone.pop("branch", None)
        config["pull"] = steps
    return config


def deploy_flows(
    settings: Settings,
    env: dict[str, str],
    source: Path = PREFECT_FILE,
    git_url: str | None = None,
    git_branch: str | None = None,
) -> Path:
    """Deploy every deployment of prefect.yaml as the settings say; returns the log file.

    The rendered copy (`render_deployments`) is written to ``<state>/deploy/prefect.yaml``
    and deployed from the folder of `source`, where the entrypoints are. The work pool is
    created as a process pool when missing; an existing one (a Kubernetes pool, say) is
    left as it is.
    """
    config = render_deployments(settings, source, git_url, git_branch)
    rendered = settings.state_path / "deploy" / "prefect.yaml"
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text(
        "# Written by `driftloop deploy` from "
        f"{source}; edit that file, not this one.\n" + yaml.safe_dump(config, sort_keys=False)
    )
    prefect = str(Path(sys.executable).parent / "prefect")
    log = settings.state_path / "logs" / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.run(
            [prefect, "work-pool", "create", settings.work_pool, "--type", "process"],
            env=env,
            cwd=str(source.parent),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,  # it exists already: keep it as it is
        )
        result = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)],
            env=env,
            cwd=str(source.parent),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise StackError(f"`prefect deploy --all` failed; see {log}:\n{procs.tail(log)}")
    return log


def configure_alerts(settings: Settings, prefect_api_url: str) -> list[str]:
    """Prefect automations that post drift/promotion/rollback events to the webhook."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.alerts import ensure_alerts

    assert settings.alert_webhook_url
    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url}):
        return ensure_alerts(settings.alert_webhook_url, settings.model_name)


def down(settings: Settings, timeout_s: float = 20.0) -> list[int]:
    """Stop every process `up` started (honcho and all its descendants); returns their pids."""
    state = settings.state_path
    info = read_stack(state)
    if not info:
        return []
    stopped: list[int] = []
    if _alive(info):
        root = psutil.Process(int(info["pid"]))
        tree = [root, *root.children(recursive=True)]
        stopped = [p.pid for p in tree]
        procs.stop_process_group(root.pid, timeout_s)
        for process in tree:  # anything that left honcho's process group
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(tree, timeout=timeout_s)
        for process in alive:
            process.kill()
    stack_file(state).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    """Health of each component as seen over HTTP, plus the stack file."""
    info = read_stack(settings.state_path)
    running = _alive(info)
    result: dict[str, Any] = {"running": running, "components": {}}
    for component in components(settings):
        healthy: bool | None = None
        if component.health_url and running:
            healthy = procs.answers_200(component.health_url)
        result["components"][component.name] = {"healthy": healthy, "url": component.ui_url}
    return result


def probe_services(urls: list[str], known: set[str] | None = None) -> dict[str, bool]:
    """url -> whether its /healthz answers 200, for serving URLs not already in `known`."""
    found: dict[str, bool] = {}
    for url in urls:
        if url in (known or set()) or url in found:
            continue
        found[url] = procs.answers_200(f"{url}/healthz")
    return found
