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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from config.names import ALIASES, CHALLENGER, CHAMPION
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


@dataclass
class Demo:
    """What the demo's steps share: the settings, where to print, the running stack."""

    settings: Settings
    console: Console
    timeline: Timeline
    info: dict[str, Any]
    registry: Any
    bikes: Any = None  # the bundled data, replayed window by window
    features: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The service's URL."""
        return str(self.info["serve_url"])

    def monitor(self, label: str) -> dict[str, Any]:
        """Run the monitor deployment now and put its decision on the timeline."""
        check = monitor_now(self.settings, self.console, label)
        decision = check["decision"]
        self.timeline.add("monitor: " + decision["action"], _versions_of(check), decision["reason"])
        return check

    def wait_served(self, version: str, role: str, timeout_s: float, what: str) -> None:
        """Wait until the service has loaded `version` as `role` (champion/challenger)."""
        key = _api_key(self.settings)
        loaded = _ready if role == CHAMPION else _serves
        wait_for(lambda: loaded(self.base, version, key), timeout_s, what)


def run_demo(settings: Settings, console: Console) -> int:
    """Run the loop against the local stack; returns the exit code.

    The process environment is changed only while the demo runs, and restored after:
    the flows it runs in this process (training) read their servers from it, as every
    Prefect flow run does."""
    env = demo_env()
    with scoped_environ(env):
        demo = start_stack(Settings(**settings.model_dump(exclude_unset=True)), console, env)
        first = train_first_version(demo)
        demo.bikes = _bundled(demo.settings)
        demo.features = first_features(demo.registry, first["version"])
        replay_window(demo, APRIL, JULY, "April–June")
        challenger = retrain_on_drift(demo)
        replay_window(demo, JULY, SEPTEMBER, "July–August")
        check = demo.monitor("monitor (after July–August)")
        if demo.registry.aliases().get(CHAMPION) != challenger.version:
            raise DemoFailed(f"the challenger was not promoted: {check['decision']['reason']}")
        restored = roll_back_a_bad_version(demo, challenger.version)
        print_timeline(console, demo.timeline, demo.settings, demo.info, demo.registry)
        show_screenshots(demo, restored)
    return 0


def demo_env() -> dict[str, str]:
    """The demo's canary share and guards (scaled down from hours: one demo run takes
    minutes), unless set: the stack's processes (the worker running the monitor, the
    service) start with them, and so do the settings read in this process."""
    defaults = {
        "DRIFTLOOP_CANARY_SHARE": "0.3",
        "DRIFTLOOP_RETRAIN_COOLDOWN_S": "600",
        "DRIFTLOOP_WATCH_PERIOD_S": "900",
    }
    return {name: os.environ.get(name, value) for name, value in defaults.items()}


@contextmanager
def scoped_environ(updates: dict[str, str]) -> Iterator[dict[str, str]]:
    """`os.environ` with `updates` (and whatever the body adds) until the block ends,
    then exactly as before."""
    saved = dict(os.environ)
    os.environ.update(updates)
    try:
        yield updates
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_stack(settings: Settings, console: Console, env: dict[str, str]) -> Demo:
    """Start the stack with the demo's `env` and check the registry is empty (the demo
    starts from nothing); this process's flows talk to the stack's servers from here on
    (inside `run_demo`'s scoped environment)."""
    from driftloop import stack
    from registry import Registry

    timeline = Timeline(console)
    with console.status("starting the stack (MLflow, Prefect, worker, bentoml serve)…"):
        info = stack.up(settings, extra_env=env)
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
    return Demo(settings, console, timeline, info, registry)


def train_first_version(demo: Demo) -> dict[str, Any]:
    """Train v1 on January–March (it becomes champion) and wait until it is served."""
    from pipelines.train import train_flow

    with demo.console.status("training v1 on January–March…"):
        first = train_flow(model_name=demo.settings.model_name, time_until=APRIL)
    demo.timeline.add(
        "trained v1 on Jan–Mar → champion",
        f"v{first['version']}",
        f"holdout rmse {first['metrics']['rmse']:.1f}",
    )
    with demo.console.status("waiting for bentoml serve to load the champion…"):
        demo.wait_served(first["version"], CHAMPION, 240, "bentoml serve to be ready")
    demo.timeline.add("serving", f"v{first['version']}", demo.base)
    return first


def replay_window(demo: Demo, start: int, end: int, label: str) -> Any:
    """Replay the days [start, end) as live traffic with their labels; every record and
    every label must be accepted."""
    from data.replay import replay

    rows = demo.bikes[(demo.bikes["day"] >= start) & (demo.bikes["day"] < end)]
    with demo.console.status(f"replaying {label}: {len(rows)} hourly rows with labels…"):
        stats = replay(
            demo.base,
            rows,
            demo.features,
            "bikers",
            api_key=_api_key(demo.settings),
            feedback_key=_feedback_key(demo.settings),
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
    demo.timeline.add(f"replayed {label}", versions, f"{stats.labels} labels sent")
    return stats


def retrain_on_drift(demo: Demo) -> Any:
    """The monitor detects drift and runs the train deployment; the retrained version
    arrives as challenger (canary) and is served. Returns the challenger."""
    check = demo.monitor("monitor (after April–June)")
    if check["decision"]["action"] != "retrain":
        raise DemoFailed(f"the monitor did not detect drift: {check['decision']['reason']}")
    with demo.console.status("retraining through the train deployment…"):
        challenger = wait_for(
            lambda: demo.registry.by_alias(CHALLENGER),
            600,
            "the retrained version to arrive as challenger",
        )
    demo.timeline.add(
        "retrained → challenger (canary)",
        f"v{challenger.version}",
        f"holdout rmse {challenger.tags.get('holdout_rmse')}: "
        f"{challenger.tags.get('gate_decision', '')}",
    )
    with demo.console.status("waiting for the service to pick up the challenger…"):
        demo.wait_served(challenger.version, CHALLENGER, 120, "the challenger to be served")
    return challenger


def roll_back_a_bad_version(demo: Demo, good: str) -> str:
    """Force-promote a version trained on shuffled labels, replay September–October: the
    monitor must roll back to `good`, and the service follow. Returns the champion."""
    from pipelines.train import train_flow

    with demo.console.status("training a deliberately bad version (shuffled labels)…"):
        bad = train_flow(
            model_name=demo.settings.model_name,
            time_until=APRIL,
            shuffle_labels=True,
            package_bento=True,
        )
    demo.registry.promote(
        bad["version"],
        "demo: force-promote a deliberately bad version "
        "(trained on shuffled labels) to show the automatic rollback",
        actor="demo",
    )
    rmse = f"holdout rmse {bad['metrics']['rmse']:.1f}"
    demo.timeline.add("force-promoted a bad version", f"v{bad['version']}", rmse)
    with demo.console.status("waiting for the service to follow the promotion…"):
        demo.wait_served(bad["version"], CHAMPION, 120, "the bad version to be served")
    replay_window(demo, SEPTEMBER, NOVEMBER, "September–October")
    check = demo.monitor("monitor (after the bad promotion)")
    restored = demo.registry.aliases().get(CHAMPION)
    if restored != good:
        raise DemoFailed(f"no automatic rollback: {check['decision']['reason']}")
    with demo.console.status("waiting for the service to follow the rollback…"):
        demo.wait_served(restored, CHAMPION, 60, "the rollback to reach the service")
    demo.timeline.add("service follows the rollback", f"v{restored}", "")
    return restored


def show_screenshots(demo: Demo, champion: str) -> None:
    """Screenshots of the key pages (headless Chromium), listed; a problem is shown, not
    fatal (the loop itself completed)."""
    with demo.console.status("screenshots of the key pages (headless Chromium)…"):
        shots, problem = take_screenshots(demo.settings, demo.info, champion)
    if shots:
        demo.console.print(f"Screenshots in {demo.settings.state_path / 'screenshots'}:")
        for name, path in shots:
            demo.console.print(f"  {name}: {path}")
    if problem:
        demo.console.print(f"[yellow]screenshots:[/yellow] {problem}")


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
    """The first truthy value `probe` returns, polled every second for `timeout_s`;
    `DemoFailed` naming `what` when none comes."""
    from driftloop.procs import wait_until

    last: list[Any] = [None]

    def arrived() -> bool:
        last[0] = probe()
        return bool(last[0])

    try:
        wait_until(arrived, timeout_s, interval_s=1.0, what=what)
    except TimeoutError:
        raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}") from None
    return last[0]


def _ready(base: str, version: str, api_key: str | None = None) -> bool:
    """The running service has loaded `version` as its champion."""
    return _loaded(base, CHAMPION, api_key) == str(version)


def _serves(base: str, version: str, api_key: str | None = None) -> bool:
    """The running service has loaded `version` as its challenger."""
    return _loaded(base, CHALLENGER, api_key) == str(version)


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
        for role in ALIASES
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
