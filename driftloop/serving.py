"""`driftloop serve` and `driftloop package`: plain functions the CLI calls.

`serve` runs ``bentoml serve bentos.service:DriftloopService`` (from the repo) or
``bentoml serve <model>-service:v<N>`` (the champion's Bento) as a child process
with the settings turned into its environment, streams its output and returns
its exit code. Problems a user can fix before serving raise `ServingError`
with a message that says how.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from config.mlflow_env import mlflow_http_env
from config.serving import SERVICE_NAME, ServingSettings
from driftloop.procs import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_IMPORT = "bentos.service:DriftloopService"
# Fields the service reads itself from DRIFTLOOP_*; the shared ones are resolved below.
_RESOLVED = {"model_name", "state_dir", "tracking_uri", "prediction_log_url", "api_key"}


class ServingError(RuntimeError):
    """Serving cannot start as asked; the message names the fix."""


class UnsafeBind(ServingError):
    """Asked to listen beyond loopback without an API key (a usage error: exit 2)."""


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` keeps the service on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, settings: Any) -> None:
    """Refuse to open a keyless service to the network unless `insecure` says so."""
    if settings.api_key is None and not settings.insecure and not is_loopback_host(host):
        raise UnsafeBind(
            f"refusing to listen on {host} without an API key: set DRIFTLOOP_API_KEY, "
            "or pass --insecure to serve without one"
        )


def warn_if_open(host: str, port: int, settings: Any) -> None:
    """A loud line on stderr when the service runs without an API key."""
    if settings.api_key is not None:
        return
    reach = "anyone on the network" if not is_loopback_host(host) else "any local process"
    print(
        f"WARNING: no API key (DRIFTLOOP_API_KEY is unset): {reach} can call "
        f"http://{host}:{port}/predict, /feedback and /metadata without authentication",
        file=sys.stderr,
    )


def service_env(settings: Any) -> dict[str, str]:
    """Environment of the `bentoml serve` child: resolved paths, every serving field.

    `settings` is duck-typed (driftloop `Settings` or `config.serving.ServingSettings`).
    """
    tracking_uri = settings.resolved_tracking_uri()
    env = {
        "BENTOML_HOME": str(settings.resolved_bentoml_home()),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "DRIFTLOOP_MODEL_NAME": settings.model_name,
        "DRIFTLOOP_STATE_DIR": str(settings.state_path),
        "DRIFTLOOP_TRACKING_URI": tracking_uri,
        "DRIFTLOOP_PREDICTION_LOG_URL": settings.resolved_prediction_log_url(),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # Overrides the CLI's/stack's MLflow retries (15 s x 2, meant for flows).
        **mlflow_http_env(settings.registry_timeout_s),
        # BentoML settings that the service decorator fixes at import time.
        "BENTOML_CONFIG_OVERRIDES": json.dumps(
            {
                "services": {
                    SERVICE_NAME: {
                        "logging": {"access": {"enabled": bool(settings.access_log)}},
                        "traffic": {"timeout": float(settings.request_timeout_s)},
                        # OpenTelemetry's middleware opens spans per request and per ASGI
                        # message even when nothing samples them (bench/README.md, serving).
                        **(
                            {}
                            if settings.trace_predictions
                            else {"tracing": {"excluded_urls": list(UNTRACED_ROUTES)}}
                        ),
                        "workers": int(getattr(settings, "workers", 1)),
                    }
                }
            }
        ),
    }
    for name in ServingSettings.model_fields:
        if name in _RESOLVED:
            continue
        value = getattr(settings, name)
        if isinstance(value, SecretStr):  # str() of a secret is '**********'
            value = value.get_secret_value()
        if value is None:
            continue
        if isinstance(value, bool):
            env[f"DRIFTLOOP_{name.upper()}"] = str(value).lower()
        elif isinstance(value, list | tuple | dict):
            env[f"DRIFTLOOP_{name.upper()}"] = json.dumps(value)
        else:
            env[f"DRIFTLOOP_{name.upper()}"] = str(value)
    if settings.api_key is not None:
        env["DRIFTLOOP_API_KEY"] = settings.api_key.get_secret_value()
    # One native thread per worker unless the caller chose: the service runs `workers`
    # processes (one per core by default), and an OpenMP/BLAS pool in each would fight
    # them (seen: single-record answers stalled 10-15 s while a training ran beside them).
    for var in NATIVE_THREAD_VARS:
        if var not in os.environ:
            env[var] = "1"
    return env


# Patterns (re.search on the URL) of the routes left out of tracing unless `trace_predictions`.
UNTRACED_ROUTES = ("/predict$", "/feedback$")
NATIVE_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def serve_command(
    settings: Any, port: int, host: str = "127.0.0.1", bento_tag: str | None = None
) -> tuple[list[str], dict[str, str], Path]:
    """argv, extra environment and working directory of `bentoml serve`."""
    target = bento_tag or SERVICE_IMPORT
    # The bentoml CLI, with its supervisor checking for dead workers every 0.25 s, not
    # every 10 s (driftloop/bentoml_serve.py).
    argv = [sys.executable, "-m", "driftloop.bentoml_serve", "serve", target]
    argv += ["--host", host, "--port", str(port)]
    return argv, service_env(settings), REPO_ROOT


@contextmanager
def _fail_fast_mlflow(timeout_s: float) -> Iterator[None]:
    """MLflow retries an unreachable server for minutes by default; not for a pre-flight check."""
    wanted = mlflow_http_env(timeout_s)
    before = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_champion(settings: Any) -> tuple[str | None, str | None]:
    """(champion version, its Bento tag) from the registry; raises ServingError if unusable.

    Returns (None, None) when the registry cannot be reached but the service has
    cached aliases to start from (it serves them and follows the registry later).
    """
    from config.names import CHAMPION
    from registry import Registry

    uri = settings.resolved_tracking_uri()
    try:
        with _fail_fast_mlflow(getattr(settings, "registry_timeout_s", 3.0)):
            registry = Registry(settings.model_name, uri)
            # aliases() raises when the server is down (by_alias would read that as "unset").
            version = registry.aliases().get(CHAMPION)
            champion = registry.get(version) if version is not None else None
    except Exception as exc:
        cache = settings.serving_state_path(settings.model_name) / "aliases.json"
        if cache.exists():
            print(
                f"warning: registry at {uri} unreachable ({type(exc).__name__}); the service "
                f"starts from the aliases cached in {cache}",
                file=sys.stderr,
            )
            return None, None
        raise ServingError(
            f"cannot reach the MLflow registry at {uri} ({type(exc).__name__}: {exc}) and no "
            f"aliases are cached in {cache}: start the stack with `driftloop up` or set "
            "MLFLOW_TRACKING_URI"
        ) from exc
    if champion is None:
        raise ServingError(
            f"no champion for model {settings.model_name}: run `driftloop train` first"
        )
    return champion.version, champion.tags.get("bento_tag")


def wait_for_champion(settings: Any, timeout_s: float | None = None, every_s: float = 2.0) -> None:
    """Block until the model has a champion (the stack starts serving before training).

    Past `timeout_s` (None: no limit), the registry's last answer (ServingError) is raised.
    """
    last: list[ServingError] = []

    def has_champion() -> bool:
        try:
            check_champion(settings)
            return True
        except ServingError as exc:
            if not last:
                print(f"waiting for a champion: {exc}", file=sys.stderr)
            last[:] = [exc]
            return False

    try:
        wait_until(has_champion, timeout_s, interval_s=every_s, what="a champion")
    except TimeoutError:
        raise last[-1] from None


def serve(
    settings: Any,
    port: int | None = None,
    host: str = "127.0.0.1",
    from_bento: bool = False,
    wait: bool = False,
    wait_timeout_s: float | None = None,
) -> int:
    """Run `bentoml serve` for `settings.model_name` in the foreground; its exit code.

    from_bento: serve the champion's Bento (``<model>-service:v<N>``) instead of the
    repo's code. wait: wait for a champion instead of failing when there is none.
    Without an API key it refuses (UnsafeBind) a non-loopback `host` unless
    `settings.insecure`, and warns on stderr.
    """
    check_bind(host, settings)
    if wait:
        wait_for_champion(settings, wait_timeout_s)
    version, bento_tag = check_champion(settings)
    if from_bento:
        if version is None:
            raise ServingError("--bento needs the registry to find the champion's Bento")
        if not bento_tag:
            raise ServingError(
                f"champion version {version} of {settings.model_name} has no Bento: "
                f"run `driftloop package {version}`"
            )
    port = port or int(getattr(settings, "serve_port", 3000))
    warn_if_open(host, port, settings)
    argv, env, cwd = serve_command(settings, port, host, bento_tag if from_bento else None)
    process = subprocess.Popen(argv, env={**os.environ, **env}, cwd=str(cwd))
    entry = record_service(settings, host, port, process.pid)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    finally:
        entry.unlink(missing_ok=True)


def services_dir(settings: Any) -> Path:
    return Path(settings.state_path) / "services"


def record_service(settings: Any, host: str, port: int, pid: int) -> Path:
    """Note a running `driftloop serve` in the state folder, so that `driftloop status`
    finds services on any port (removed when it stops; a dead pid is ignored)."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    folder = services_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / f"{port}.json"
    entry.write_text(
        json.dumps({"url": f"http://{reach}:{port}", "pid": pid, "model_name": settings.model_name})
    )
    return entry


def running_services(settings: Any) -> list[str]:
    """URLs of the `driftloop serve` processes of this model that are still running."""
    urls = []
    for entry in sorted(services_dir(settings).glob("*.json")):
        try:
            info = json.loads(entry.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)  # its process is gone (or the file is not ours)
            continue
        if info.get("model_name") == settings.model_name:
            urls.append(str(info["url"]))
    return urls


def package(settings: Any, version: str | int) -> str:
    """Import version N into the BentoML store and build its Bento; the Bento tag."""
    from pipelines.package import package_version_plain

    return package_version_plain(settings, version)
