"""`driftloop demo`: the whole lifecycle on the bundled Bikeshare data, for real.

stack up → train v1 on January–March → serve → replay April–June as live traffic with
labels → the monitor deployment detects drift → it triggers the train deployment →
the retrained version arrives as challenger (canary) → more traffic → the monitor
promotes it → a deliberately bad version (shuffled labels) is force-promoted → live
labels degrade → the monitor rolls back. Ends with a timeline and the UI links, and
exits non-zero when any step of the loop did not happen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from config.settings import Settings

# Day-of-year boundaries of the bundled 2011 data.
APRIL, JULY, SEPTEMBER, NOVEMBER = 91, 182, 244, 305


class DemoFailed(RuntimeError):
    """A step of the loop did not happen; the message says which and where to look."""


@dataclass
class Timeline:
    """What happened, printed as it happens and as a table at the end."""

    console: Console | None = None
    started: float = field(default_factory=time.monotonic)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, event: str, versions: str, figures: str) -> None:
        elapsed = f"{time.monotonic() - self.started:6.1f} s"
        self.rows.append((elapsed, event, versions, figures))
        if self.console is not None:
            detail = " — ".join(part for part in (versions, figures) if part)
            self.console.print(f"[dim]{elapsed}[/dim]  [bold]{event}[/bold]  {detail}")


def run_demo(settings: Settings, console: Console) -> int:
    """Run the loop against the local stack; returns the exit code."""

    from driftloop import stack
    from registry import Registry

    timeline = Timeline(console)
    demo_env = {
        "DRIFTLOOP_CANARY_SHARE": os.environ.get("DRIFTLOOP_CANARY_SHARE", "0.3"),
        # One demo run takes minutes, so the guards are scaled down from hours.
        "DRIFTLOOP_RETRAIN_COOLDOWN_S": os.environ.get("DRIFTLOOP_RETRAIN_COOLDOWN_S", "600"),
        "DRIFTLOOP_WATCH_PERIOD_S": os.environ.get("DRIFTLOOP_WATCH_PERIOD_S", "900"),
    }
    os.environ.update(demo_env)
    settings = Settings(**{**settings.model_dump(exclude_unset=True)})

    with console.status("starting the stack (MLflow, Prefect, worker, bentoml serve)…"):
        info = stack.up(settings)
    os.environ["MLFLOW_TRACKING_URI"] = info["mlflow_tracking_uri"]
    os.environ["PREFECT_API_URL"] = info["prefect_api_url"]
    timeline.add("stack up", "", f"MLflow {info['mlflow_tracking_uri']}")
    registry = Registry(
        settings.model_name, info["mlflow_tracking_uri"], move_wait_s=settings.alias_move_wait_s
    )
    if registry.versions():
        raise DemoFailed(
            f"model {settings.model_name!r} already has versions in {settings.state_path}: the "
            "demo starts from an empty registry. Run `make down && make clean` first, or set "
            "DRIFTLOOP_STATE_DIR to a new folder."
        )

    from pipelines.train import train_flow

    with console.status("training v1 on January–March…"):
        first = train_flow(model_name=settings.model_name, time_until=APRIL)
    timeline.add(
        "trained v1 on Jan–Mar → champion",
        f"v{first['version']}",
        f"holdout rmse {first['metrics']['rmse']:.1f}",
    )
    base = info["serve_url"]
    with console.status("waiting for bentoml serve to load the champion…"):
        wait_for(
            lambda: _ready(base, first["version"], _api_key(settings)),
            240,
            "bentoml serve to be ready",
        )
    timeline.add("serving", f"v{first['version']}", f"{base}")

    bikes = _bundled(settings)
    features, target = first_features(registry, first["version"]), "bikers"

    def send(start: int, end: int, label: str) -> Any:
        rows = bikes[(bikes["day"] >= start) & (bikes["day"] < end)]
        from data.replay import replay

        with console.status(f"replaying {label}: {len(rows)} hourly rows with labels…"):
            stats = replay(
                base,
                rows,
                features,
                target,
                api_key=_api_key(settings),
                feedback_key=_feedback_key(settings),
            )
        if stats.failed:
            raise DemoFailed(
                f"{stats.failed} records failed while replaying {label}: {stats.errors[:2]}"
            )
        if stats.labels < stats.records:
            raise DemoFailed(
                f"the service refused {stats.records - stats.labels} labels while replaying "
                f"{label}: {stats.errors[:2]}"
            )
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(stats.versions.items()))
        timeline.add(f"replayed {label}", versions, f"{stats.labels} labels sent")
        return stats

    send(APRIL, JULY, "April–June")
    check = monitor_now(settings, console, "monitor (after April–June)")
    timeline.add(
        "monitor: " + check["decision"]["action"], _versions_of(check), check["decision"]["reason"]
    )
    if check["decision"]["action"] != "retrain":
        raise DemoFailed(f"the monitor did not detect drift: {check['decision']['reason']}")

    with console.status("retraining through the train deployment…"):
        challenger = wait_for(
            lambda: registry.by_alias("challenger"),
            600,
            "the retrained version to arrive as challenger",
        )
    timeline.add(
        "retrained → challenger (canary)",
        f"v{challenger.version}",
        f"holdout rmse {challenger.tags.get('holdout_rmse')}: "
        f"{challenger.tags.get('gate_decision', '')}",
    )
    with console.status("waiting for the service to pick up the challenger…"):
        wait_for(
            lambda: _serves(base, challenger.version, _api_key(settings)),
            120,
            "the challenger to be served",
        )

    send(JULY, SEPTEMBER, "July–August")
    check = monitor_now(settings, console, "monitor (after July–August)")
    timeline.add(
        "monitor: " + check["decision"]["action"], _versions_of(check), check["decision"]["reason"]
    )
    if registry.aliases().get("champion") != challenger.version:
        raise DemoFailed(f"the challenger was not promoted: {check['decision']['reason']}")

    with console.status("training a deliberately bad version (shuffled labels)…"):
        bad = train_flow(
            model_name=settings.model_name,
            time_until=APRIL,
            shuffle_labels=True,
            package_bento=True,
        )
    registry.promote(
        bad["version"],
        "demo: force-promote a deliberately bad version "
        "(trained on shuffled labels) to show the automatic rollback",
        actor="demo",
    )
    timeline.add(
        "force-promoted a bad version",
        f"v{bad['version']}",
        f"holdout rmse {bad['metrics']['rmse']:.1f}",
    )
    with console.status("waiting for the service to follow the promotion…"):
        wait_for(
            lambda: _ready(base, bad["version"], _api_key(settings)),
            120,
            "the bad version to be served",
        )

    send(SEPTEMBER, NOVEMBER, "September–October")
    check = monitor_now(settings, console, "monitor (after the bad promotion)")
    timeline.add(
        "monitor: " + check["decision"]["action"], _versions_of(check), check["decision"]["reason"]
    )
    restored = registry.aliases().get("champion")
    if restored != challenger.version:
        raise DemoFailed(f"no automatic rollback: {check['decision']['reason']}")
    with console.status("waiting for the service to follow the rollback…"):
        wait_for(
            lambda: _ready(base, restored, _api_key(settings)),
            60,
            "the rollback to reach the service",
        )
    timeline.add("service follows the rollback", f"v{restored}", "")

    print_timeline(console, timeline, settings, info, registry)
    with console.status("screenshots of the key pages (headless Chromium)…"):
        shots, problem = take_screenshots(settings, info, restored)
    if shots:
        console.print(f"Screenshots in {settings.state_path / 'screenshots'}:")
        for name, path in shots:
            console.print(f"  {name}: {path}")
    if problem:
        console.print(f"[yellow]screenshots:[/yellow] {problem}")
    return 0


def key_pages(settings: Settings, info: dict[str, Any], champion: str) -> dict[str, str]:
    """name -> URL of the pages that tell the story: the registry (which version is
    champion and why), the Prefect runs and the monitor's artifact, the service's docs."""
    mlflow_url = info["mlflow_tracking_uri"].rstrip("/")
    prefect_ui = info["prefect_api_url"].removesuffix("/api").rstrip("/")
    model = settings.model_name
    artifact_key = f"monitor-{model}".lower().replace("_", "-").replace(".", "-")
    pages = {
        "mlflow-model": f"{mlflow_url}/#/models/{model}",
        "mlflow-champion": f"{mlflow_url}/#/models/{model}/versions/{champion}",
        "prefect-runs": f"{prefect_ui}/runs",
        "prefect-monitor-artifact": f"{prefect_ui}/artifacts/key/{artifact_key}",
        "service-docs": f"{info['serve_url'].rstrip('/')}/",
    }
    if info.get("evidently_url"):
        pages["evidently-dashboard"] = evidently_dashboard(info["evidently_url"], model)
    return pages


def evidently_dashboard(base: str, model: str) -> str:
    """The URL of the model's project dashboard in `evidently ui` (its home page when the
    project cannot be found)."""
    base = base.rstrip("/")
    try:
        projects = httpx.get(f"{base}/api/projects", timeout=10).json()
        project = next(p for p in projects if p.get("name") == model)
    except (httpx.HTTPError, ValueError, StopIteration, TypeError, AttributeError):
        return base
    return f"{base}/projects/{project['id']}"


def take_screenshots(
    settings: Settings, info: dict[str, Any], champion: str
) -> tuple[list[tuple[str, Any]], str | None]:
    """PNGs of `key_pages` in the state folder's `screenshots/`; ([(name, path)], problem)."""
    from driftloop.browser import BrowserError, screenshot

    folder = settings.state_path / "screenshots"
    shots = []
    for name, url in key_pages(settings, info, champion).items():
        try:
            shots.append((name, screenshot(url, folder / f"{name}.png")))
        except BrowserError as exc:
            return shots, str(exc)
    return shots, None


# -- helpers ----------------------------------------------------------------------------------


def wait_for(probe: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1.0)
    raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _ready(base: str, version: str, api_key: str | None = None) -> bool:
    """The running service has loaded `version` as its champion."""
    return _loaded(base, "champion", api_key) == str(version)


def _serves(base: str, version: str, api_key: str | None = None) -> bool:
    """The running service has loaded `version` as its challenger."""
    return _loaded(base, "challenger", api_key) == str(version)


def _loaded(base: str, role: str, api_key: str | None = None) -> str | None:
    """The version the running service has loaded for a role (GET /metadata, key-protected)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base}/metadata", headers=headers, timeout=3)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    entry = response.json().get(role) or {}
    return str(entry["version"]) if entry.get("version") is not None else None


def _api_key(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None


def _feedback_key(settings: Settings) -> str | None:
    """The key that posts labels: the feedback key, else the API key (see the README)."""
    if settings.feedback_api_key:
        return settings.feedback_api_key.get_secret_value()
    return _api_key(settings)


def _bundled(settings: Settings) -> Any:
    import pandas as pd

    return pd.read_csv(settings.dataset_spec().path)


def first_features(registry: Any, version: str) -> list[str]:
    import mlflow

    info = registry.get(version)
    schema = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/schema.json")
    return list(schema["features"])


def monitor_now(settings: Settings, console: Console, label: str) -> dict[str, Any]:
    """Run the `monitor` deployment now (the same one the schedule runs) and wait for it."""
    from prefect.deployments import run_deployment

    with console.status(f"{label}: running the monitor deployment…"):
        run = run_deployment(
            "monitor/monitor", parameters={"model_name": settings.model_name}, timeout=600
        )
    if not run.state or not run.state.is_completed():
        raise DemoFailed(f"the monitor flow run {run.name} ended {run.state}; see the Prefect UI")
    from pipelines.monitor import read_last_check

    check = read_last_check(settings)
    if check is None:
        raise DemoFailed("the monitor ran but wrote no check result")
    return check


def _versions_of(check: dict[str, Any]) -> str:
    figures = check.get("figures", {})
    parts = [
        f"{role} v{figures.get(f'{role}_version')}"
        for role in ("champion", "challenger", "previous")
        if figures.get(f"{role}_version")
    ]
    return ", ".join(parts)


def print_timeline(
    console: Console, timeline: Timeline, settings: Settings, info: dict[str, Any], registry: Any
) -> None:
    table = Table(title="driftloop demo — what happened")
    for column in ("time", "event", "versions", "figures / reason"):
        table.add_column(column, overflow="fold")
    for row in timeline.rows:
        table.add_row(*row)
    console.print(table)
    mlflow_url = info["mlflow_tracking_uri"]
    prefect_ui = info["prefect_api_url"].removesuffix("/api")
    from pipelines.monitor import read_last_check

    last = read_last_check(settings) or {}
    versions = [v.version for v in registry.versions()]
    console.print(f"Prefect UI (flow runs, artifacts): {prefect_ui}/runs")
    console.print(
        f"MLflow UI (versions {', '.join(versions)} with aliases): "
        f"{mlflow_url}/#/models/{settings.model_name}"
    )
    if last.get("report_html"):
        console.print(f"Latest Evidently report: {last['report_html']}")
    if info.get("evidently_url"):
        console.print(f"Evidently UI (drift over time, every check): {info['evidently_url']}")
    console.print(f"Service docs (Swagger UI): {info['serve_url']}/")
    console.print("History: `driftloop history`   Stop the stack: `make down`")
