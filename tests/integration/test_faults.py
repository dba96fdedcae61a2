"""Faults under real `bentoml serve`: a killed worker, a locked prediction log, MLflow down,
a champion that returns NaN (answered by `previous`, then rolled back by the monitor).

Each test injects one fault while clients send traffic, clears it, and checks what
a user would see: no acknowledged prediction lost, 503 (never a hang or a 500) while
the service cannot answer, /readyz saying so, and answers again within seconds of the
fault clearing, without a restart. Models and helpers come from test_serving.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import test_serving as ts
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from bentos.packaging import package_version
from config.settings import Settings
from driftloop import procs
from driftloop.warm_worker import find_workers
from monitoring.policy import Action, Figures, decide, thresholds_from
from pipelines import monitor
from registry import Registry

pytestmark = pytest.mark.integration

models = ts.models  # fixtures shared with test_serving.py
home = ts.home

REQUEST_TIMEOUT_S = 4.0  # BentoML traffic timeout of the services below
COMMIT_TIMEOUT_S = 1.5  # prediction_log_commit_timeout_s
RECOVERY_S = 5.0  # the acceptance bound: 200 within this after a fault clears
# A restarted worker re-imports everything and reloads the model: seconds when the
# machine is idle, over a minute when the 2 cores are shared by several test runs.
WORKER_RESTART_S = 180.0
WORKERS = 2  # the default: two workers write one SQLite prediction log


@dataclass
class Traffic:
    """Client threads sending /predict with unique request ids until stopped."""

    served: ts.Served
    records: list[dict[str, Any]]
    clients: int = 8
    per_request: int = 2
    acknowledged: list[str] = field(default_factory=list)
    answers: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for worker in range(self.clients):
            thread = threading.Thread(target=self._send, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self, worker: int) -> None:
        prefix = uuid.uuid4().hex[:6]
        n = 0
        with httpx.Client(timeout=15) as client:
            while not self._stop.is_set():
                n += 1
                body = {
                    "records": [
                        dict(
                            self.records[(n + k) % len(self.records)],
                            request_id=f"{prefix}-{n}-{k}",
                        )
                        for k in range(self.per_request)
                    ]
                }
                sent = time.monotonic()
                try:
                    response = self.served.predict(body, client)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append((sent, type(exc).__name__))
                    time.sleep(0.05)
                    continue
                done = time.monotonic()
                if response.status_code != 200:
                    time.sleep(0.02)  # a 503 comes back at once: do not spin
                version = None
                with self._lock:
                    if response.status_code == 200:
                        answer = response.json()
                        self.acknowledged.extend(answer["request_ids"])
                        version = answer["model_version"]
                    self.answers.append((sent, done, response.status_code, version))

    def count_ok(self) -> int:
        with self._lock:
            return sum(1 for *_, status, _ in self.answers if status == 200)

    def failures(self) -> list[tuple[float, str]]:
        """Every request that did not get a 200: (sent at, status or error)."""
        with self._lock:
            bad = [(sent, str(status)) for sent, _, status, _ in self.answers if status != 200]
            return bad + list(self.errors)


def worker_pids(server: procs.Server) -> set[int]:
    """Pids of the serving processes under `bentoml serve` (the children each worker's
    warm parent forked, driftloop/warm_worker.py)."""
    return find_workers(server.process.pid).serving


def all_serving(server: procs.Server) -> set[int]:
    """The serving children once every worker's warm parent has forked one (a parent
    still importing serves nothing yet, and a kill -9 of it is a restart from scratch)."""
    found: set[int] = set()

    def forked() -> bool:
        workers = find_workers(server.process.pid)
        found.clear()
        found.update(workers.serving)
        return len(workers.tree) == WORKERS and all(
            len(kids) == 1 for kids in workers.tree.values()
        )

    wait(forked, 60, "a serving child under every warm parent")
    return found


def readyz(served: ts.Served) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{served.url}/readyz", timeout=10)
    return response.status_code, response.json()


def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `predicate` held (fails after `timeout_s`)."""
    started = time.monotonic()
    procs.wait_until(predicate, timeout_s, 0.05, what)
    return time.monotonic() - started


def logged_ids(served: ts.Served, ids: set[str]) -> set[str]:
    log = served.log()
    try:
        return log.known_request_ids(ids)
    finally:
        log.close()


@pytest.fixture(scope="module")
def service(
    mlflow_server: procs.Server,
    models: ts.Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ts.Served]:
    """One `bentoml serve` with short traffic and commit timeouts, champion v1."""
    name = f"faults-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    v1, _ = ts.register(uri, name, models)
    package_version(name, v1.version, uri, home=home)
    Registry(name, uri).set_alias("champion", v1.version, reason="fault tests")
    settings = ts.settings_for(
        tmp_path_factory.mktemp("faults"),
        name,
        uri,
        request_timeout_s=REQUEST_TIMEOUT_S,
        prediction_log_commit_timeout_s=COMMIT_TIMEOUT_S,
        workers=WORKERS,
    )
    served = ts.start("serve-faults", settings, home)
    yield served
    served.server.stop()


def test_kill_9_of_the_worker_under_load_loses_no_acknowledged_prediction(
    service: ts.Served, models: ts.Models
) -> None:
    before = all_serving(service.server)
    keepers = find_workers(service.server.process.pid).keepers
    assert len(before) == WORKERS, before
    with Traffic(service, ts.records(models, 50), clients=8) as traffic:
        wait(lambda: traffic.count_ok() > 100, 60, "answers before the kill")
        killed_at = time.monotonic()
        for pid in before:
            psutil.Process(pid).kill()  # SIGKILL all; their warm parents fork new ones
        wait(
            lambda: any(
                status == 200 and sent > killed_at for sent, _, status, _ in traffic.answers
            ),
            WORKER_RESTART_S,
            "answers from the restarted worker",
        )
        resumed_after_s = (
            min(
                done
                for sent, done, status, _ in traffic.answers
                if status == 200 and sent > killed_at
            )
            - killed_at
        )
        ok_at_resume = traffic.count_ok()
        wait(lambda: traffic.count_ok() > ok_at_resume + 100, 30, "steady answers again")
    after = all_serving(service.server)
    assert after.isdisjoint(before)  # the worker really was replaced
    assert find_workers(service.server.process.pid).keepers == keepers  # by a fork
    acknowledged = set(traffic.acknowledged)
    lost = acknowledged - logged_ids(service, acknowledged)
    print(
        f"\nkill -9 of the worker: {len(acknowledged)} acknowledged, {len(lost)} lost, "
        f"answers resumed {resumed_after_s:.1f} s after the kill"
    )
    assert not lost, f"{len(lost)} acknowledged predictions are not in the log"
    assert readyz(service)[0] == 200


def _hold_write_lock(path: Path) -> subprocess.Popen[str]:
    """Another process takes the prediction log's write lock (until told on stdin)."""
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute('ROLLBACK')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_locked_prediction_log_gives_503_and_recovers_without_restart(
    service: ts.Served, models: ts.Models
) -> None:
    wait(lambda: readyz(service)[0] == 200, WORKER_RESTART_S, "a ready service")
    body = {"records": ts.records(models, 2)}
    first = service.predict(body)
    assert first.status_code == 200
    pids = all_serving(service.server)
    path = Path(service.settings.resolved_prediction_log_url().removeprefix("sqlite:///"))
    holder = _hold_write_lock(path)
    locked_at = time.monotonic()
    try:
        statuses = []
        with Traffic(service, ts.records(models, 20), clients=4) as traffic:
            # Each worker notices the lock on its own next write; /readyz may be
            # answered by a worker that has not written yet, so the 503 is judged
            # on the answer that said it.
            ready: dict[str, Any] = {}

            def not_ready() -> bool:
                status, body = readyz(service)
                if status == 503:
                    ready.update(body)
                return status == 503

            wait(not_ready, 15, "/readyz 503 while the log is locked")
            assert ready["status"] == "not_ready"
            assert ready["reason"] == "prediction log locked: database is locked"
            # The observed fault: a /feedback whose commit cannot happen while locked.
            feedback = httpx.post(
                f"{service.url}/feedback",
                json={"labels": [{"request_id": first.json()["request_ids"][0], "label": 1.0}]},
                timeout=15,
            )
            assert feedback.status_code in (503, 504), feedback.text
            for _ in range(5):
                response = service.predict(body)
                statuses.append(response.status_code)
                assert response.status_code == 503, response.text
                detail = response.json()["detail"]
                assert detail.startswith("prediction log locked") and "INSERT" not in detail
            # Held longer than the traffic timeout, with clients waiting on it.
            remaining = REQUEST_TIMEOUT_S + 1.0 - (time.monotonic() - locked_at)
            if remaining > 0:
                time.sleep(remaining)
            held_s = time.monotonic() - locked_at
            during = traffic.failures()
            assert traffic.count_ok() == 0  # nothing acknowledged that was not logged
        assert {s for _, s in during} <= {"503", "504"}, during
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
    released_at = time.monotonic()
    recovered_s = wait(
        lambda: service.predict(body).status_code == 200, RECOVERY_S, "/predict 200 again"
    )
    # Every worker ready again (each finds the log writable on its own probe).
    wait(
        lambda: all(readyz(service)[0] == 200 for _ in range(2 * WORKERS)),
        RECOVERY_S,
        "/readyz 200 from every worker",
    )
    assert worker_pids(service.server) == pids  # recovered without a restart
    print(
        f"\nprediction log locked {held_s:.1f} s: {len(during)} requests got 503/504; "
        f"/predict answered 200 {time.monotonic() - released_at:.1f} s after release "
        f"(first poll {recovered_s:.1f} s)"
    )


# -- the registry goes away ----------------------------------------------------------------


@pytest.fixture(scope="module")
def own_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An MLflow server this module may stop and restart (same port and store)."""
    state = tmp_path_factory.mktemp("own-mlflow")
    port = procs.free_port()
    holder: dict[str, Any] = {"port": port, "state": state, "url": f"http://127.0.0.1:{port}"}

    def launch() -> procs.Server:
        server = procs.start_mlflow_server("mlflow-own", port, state, state / "mlflow.log")
        server.wait_healthy(timeout_s=120)
        return server

    holder["launch"] = launch
    holder["server"] = launch()
    yield holder
    holder["server"].stop()


@pytest.mark.slow
def test_mlflow_down_and_back_mid_traffic_fails_no_prediction_and_follows_aliases_again(
    own_mlflow: dict[str, Any],
    models: ts.Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    uri = own_mlflow["url"]
    name = f"faults-outage-{uuid.uuid4().hex[:6]}"
    v1, v2 = ts.register(uri, name, models)
    package_version(name, v1.version, uri, home=home)  # v2 is imported live, after the outage
    Registry(name, uri).set_alias("champion", v1.version, reason="outage test")
    settings = ts.settings_for(tmp_path_factory.mktemp("outage"), name, uri)
    served = ts.start("serve-outage", settings, home)
    try:
        assert readyz(served)[1]["status"] == "ready"
        with Traffic(served, ts.records(models, 20), clients=2) as traffic:
            wait(lambda: traffic.count_ok() > 20, 20, "answers before the outage")
            own_mlflow["server"].stop()  # the registry goes away mid-traffic
            wait(lambda: readyz(served)[1]["status"] == "degraded", 15, "degraded /readyz")
            status, ready = readyz(served)
            assert status == 200 and ready["registry"]["reachable"] is False
            ok_down = traffic.count_ok()
            wait(lambda: traffic.count_ok() > ok_down + 50, 20, "answers while MLflow is down")
            # A restart while MLflow is down serves from the alias cache + local store.
        assert traffic.failures() == [] and {v for *_, v in traffic.answers} == {"1"}
        served.server.stop()
        served = ts.start("serve-outage-restarted", settings, home)
        assert readyz(served)[1]["aliases_from"] == "cache"
        with Traffic(served, ts.records(models, 20), clients=2) as traffic:
            wait(lambda: traffic.count_ok() > 20, 20, "answers after the restart")
            own_mlflow["server"] = own_mlflow["launch"]()  # the registry comes back
            wait(lambda: readyz(served)[1]["status"] == "ready", 60, "recovered /readyz")
            assert readyz(served)[1]["aliases_from"] == "registry"
            moved_at = time.monotonic()  # set_alias also logs a decision run: time from here
            Registry(name, uri).set_alias("champion", v2.version, reason="after the outage")
            wait(
                lambda: any(v == "2" and s > moved_at for s, _, _, v in traffic.answers),
                WORKER_RESTART_S,  # v2 is downloaded from MLflow and loaded meanwhile
                "answers from the champion moved after the outage",
            )
            switched_s = time.monotonic() - moved_at
        assert traffic.failures() == [], traffic.failures()[:5]
        print(f"\nMLflow outage: 0 failed predictions; alias move picked up in {switched_s:.1f} s")
    finally:
        served.server.stop()


@pytest.mark.slow
def test_a_champion_returning_nan_is_answered_by_previous_then_rolled_back_by_the_monitor(
    mlflow_server: procs.Server,
    prefect_server: procs.Server,
    models: ts.Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """v2 predicts NaN: callers get v1's answers (role `fallback`), the service moves no
    alias; one monitor decision rolls back through the registry's compare-and-swap, with
    the error in its reason, and the service follows."""
    broken = nan_pipeline(models.pipelines[0])
    uri = mlflow_server.base_url
    name = f"faults-nan-{uuid.uuid4().hex[:6]}"
    ts.register(
        uri, name, ts.Models([models.pipelines[0], broken], models.features, models.signature)
    )
    registry = Registry(name, uri)
    registry.set_alias("champion", "1", reason="fallback test")
    registry.promote("2", reason="fallback test: v2 (it returns NaN)")
    state_dir = tmp_path_factory.mktemp("fallback")
    served = ts.start("serve-fallback", ts.settings_for(state_dir, name, uri), home)
    try:
        wait(lambda: readyz(served)[1]["previous"] == "1", 120, "previous v1 loaded")
        for batch in range(3):
            body = {"records": ts.records(models, 20, prefix=f"nan-{batch}")}
            answer = served.predict(body).json()
            assert set(answer["model_versions"]) == {"1"}, answer
        assert registry.aliases()["champion"] == "2"  # the service moved nothing

        settings = Settings(
            model_name=name,
            tracking_uri=uri,
            state_dir=state_dir,
            prediction_log_url=served.settings.resolved_prediction_log_url(),
        )
        state = monitor.read_registry.fn(settings)
        found: dict[str, Any] = {}

        def error_logged() -> bool:
            found.update(monitor.read_fallbacks.fn(settings, state, None, None))
            return found["fallback_error"] is not None

        wait(error_logged, 20, "the fallback event in the log")
        figures = Figures(
            now=datetime.now(UTC), champion_version="2", previous_version="1", **found
        )
        decision = decide(figures, thresholds_from(settings))
        assert decision.action is Action.ROLLBACK
        assert decision.reason.startswith(
            "champion v2 failed 60 of 60 requests in the window (100.0%): answered by v1 — "
            "NonFinitePredictions: the model returned"
        )

        @flow(name="fallback-rollback-test")
        def one_check() -> str | None:
            return monitor.act(settings, decision, pd.DataFrame(), state, "monitor-nan-1")

        with temporary_settings(updates={PREFECT_API_URL: prefect_server.base_url}):
            acted = one_check()
        assert acted == "rolled back: champion: 2 → 1, previous: 1 → 2"
        recorded = registry.history.list(1)[0]
        assert recorded.action == "rollback" and recorded.actor == "monitor"
        assert recorded.reason == decision.reason

        wait(lambda: readyz(served)[1]["champion"] == "1", 30, "the service follows")
        answer = served.predict({"records": ts.records(models, 5, prefix="after")}).json()
        assert set(answer["model_versions"]) == {"1"}
        log = served.log()
        try:
            roles = {r.role for r in log.predictions() if r.request_id.startswith("after-")}
        finally:
            log.close()
        assert roles == {"champion"}  # v1 answers as champion now, not as a fallback
        # The next check finds no failures of the new champion: no swap back.
        state = monitor.read_registry.fn(settings)
        assert monitor.read_fallbacks.fn(settings, state, None, None)["champion_fallback_rows"] == 0
    finally:
        served.server.stop()


def nan_pipeline(template: Pipeline) -> Pipeline:
    """The template's preprocessing with a linear model whose intercept is NaN."""
    frame = pd.read_csv(ts.DATA).iloc[:400]
    y = frame.pop("bikers").astype(float)
    X = frame.drop(columns=["casual", "registered", "day"])
    pipe = Pipeline([("pre", clone(template.named_steps["pre"])), ("model", LinearRegression())])
    pipe.fit(X, y)
    pipe.named_steps["model"].intercept_ = np.float64("nan")
    return pipe
