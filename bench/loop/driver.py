"""Drive the whole loop against a real local stack and time each step (run as a process).

    DRIFTLOOP_STATE_DIR=… DRIFTLOOP_*_PORT=… python -m bench.loop.driver

`driftloop up` (honcho: MLflow, Prefect, a process worker, `driftloop serve`), then, as
`driftloop demo` does: train v1 on January–March → serve it → replay April–June as live
traffic with labels (the drift onset) → the `monitor` deployment detects drift and runs the
`train` deployment → the retrained version arrives as challenger (canary) → July–August
traffic → the monitor promotes it. A continuous client (CLIENTS connections, one labelled
July–August record per request, its label sent as feedback) runs from before the promotion
to after a rollback decision and records every answer's version, so the table can say when
clients saw each swap and how many requests failed. Prints one JSON line; the caller
(`bench.loop.run`) stops the stack too.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

CLIENTS = 4
ROLLBACK_DRILLS = 5


class AliasWatcher:
    """Notes when an alias first points at a version (polled every 100 ms)."""

    def __init__(self, registry: Any, alias: str, version: str) -> None:
        self.registry, self.alias, self.version = registry, alias, version
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last_miss = time.time()
        while not self._stop.is_set() and self.seen_at is None:
            started = time.time()
            try:
                if self.registry.aliases().get(self.alias) == self.version:
                    # It moved after the last read that missed it began: the earliest
                    # possible moment, so the swap timings are upper bounds.
                    self.seen_at = last_miss
                else:
                    last_miss = started
            except Exception:
                pass
            self._stop.wait(0.1)


@dataclass
class Answers:
    """What the continuous client saw: (sent, received, status, version) per request."""

    rows: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def visible_at(self, decided: float, version: str) -> float | None:
        """Send time of the first request after `decided` from which every answer is `version`."""
        with self.lock:
            after = sorted(r for r in self.rows if r[0] >= decided)
        start = None
        for sent, _, status, got in after:
            ok = status == 200 and got == version
            start = (start or sent) if ok else None
        return start


def client(
    base: str,
    api_key: str | None,
    feedback_key: str | None,
    traffic: list[tuple[dict[str, Any], Any]],
    worker: int,
    out: Answers,
    stop: threading.Event,
) -> None:
    """One connection: a labelled record per request, back to back, then its feedback.

    Real traffic (cycling through July–August with their labels), so the monitor's window
    that this client fills still judges the canary on live labels.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    label_headers = {"Authorization": f"Bearer {feedback_key}"} if feedback_key else {}
    n = 0
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        while not stop.is_set():
            features, label = traffic[(worker * 997 + n) % len(traffic)]
            request_id = f"bench-client-{worker}-{n}"
            n += 1
            sent = time.time()
            body = {"records": [{**features, "request_id": request_id}]}
            try:
                response = http.post("/predict", json=body)
                ok = response.status_code == 200
                version = response.json().get("model_version") if ok else None
                row = (sent, time.time(), response.status_code, version)
                if ok:
                    labels = {"labels": [{"request_id": request_id, "label": label}]}
                    http.post("/feedback", json=labels, headers=label_headers)
            except httpx.HTTPError as exc:
                row = (sent, time.time(), 0, None)
                with out.lock:
                    out.errors.append(repr(exc))
            with out.lock:
                out.rows.append(row)


def main() -> None:
    import os

    from rich.console import Console

    from config.settings import Settings
    from data.replay import replay
    from driftloop import stack
    from driftloop.demo import (
        APRIL,
        JULY,
        SEPTEMBER,
        _api_key,
        _bundled,
        _feedback_key,
        _ready,
        _serves,
        first_features,
        monitor_now,
        wait_for,
    )
    from registry import Registry

    console = Console(stderr=True)
    settings = Settings()
    steps: dict[str, float] = {}
    notes: list[str] = []

    def mark(name: str, since: float) -> float:
        now = time.monotonic()
        steps[name] = now - since
        console.log(f"{name}: {steps[name]:.1f} s")
        return now

    t = time.monotonic()
    info = stack.up(settings)
    t = mark("stack up (MLflow, Prefect, worker, serve; deployments)", t)
    os.environ["MLFLOW_TRACKING_URI"] = info["mlflow_tracking_uri"]
    os.environ["PREFECT_API_URL"] = info["prefect_api_url"]
    # Prefect reads its settings when first imported: only now, with the stack's URL.
    from pipelines.train import train_flow

    _pause_schedules()
    base = info["serve_url"]
    registry = Registry(
        settings.model_name, info["mlflow_tracking_uri"], move_wait_s=settings.alias_move_wait_s
    )

    first = train_flow(model_name=settings.model_name, time_until=APRIL)
    t = mark("train v1 (flow, first run in the process)", t)
    wait_for(
        lambda: _ready(base, first["version"], _api_key(settings)), 240, "bentoml serve to load v1"
    )
    t = mark("serve loads v1 (service started after the first champion)", t)

    bikes = _bundled(settings)
    features = first_features(registry, first["version"])
    api_key = _api_key(settings)
    feedback_key = _feedback_key(settings)

    def send(start: int, end: int) -> Any:
        rows = bikes[(bikes["day"] >= start) & (bikes["day"] < end)]
        return replay(base, rows, features, "bikers", api_key=api_key, feedback_key=feedback_key)

    onset = time.monotonic()
    stats = send(APRIL, JULY)
    t = mark("replay April–June (drifted traffic + labels)", onset)
    check = monitor_now(settings, console, "monitor")
    detected = mark("monitor deployment run (detects drift)", t)
    steps["drift onset → detection"] = detected - onset
    if check["decision"]["action"] != "retrain":
        raise SystemExit(f"the monitor did not detect drift: {check['decision']['reason']}")
    challenger = wait_for(lambda: registry.by_alias("challenger"), 600, "the challenger")
    t = mark("detection → retrained challenger registered (train deployment)", detected)
    steps["drift onset → challenger registered"] = t - onset
    wait_for(
        lambda: _serves(base, challenger.version, _api_key(settings)),
        120,
        "the challenger to be served",
    )
    t = mark("challenger registered → served as canary", t)

    answers, stop = Answers(), threading.Event()
    rollbacks: list[float] = []
    summer = bikes[(bikes["day"] >= JULY) & (bikes["day"] < SEPTEMBER)]
    traffic = [
        ({k: _plain(v) for k, v in row.items()}, _plain(label))
        for row, label in zip(
            summer[features].to_dict(orient="records"), summer["bikers"], strict=True
        )
    ]
    threads = [
        threading.Thread(
            target=client,
            args=(base, api_key, feedback_key, traffic, w, answers, stop),
            daemon=True,
        )
        for w in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        t = time.monotonic()
        send(JULY, SEPTEMBER)
        t = mark("replay July–August (canary traffic + labels)", t)
        watcher = AliasWatcher(registry, "champion", challenger.version)
        watcher.start()
        check = monitor_now(settings, console, "monitor")
        t = mark("monitor deployment run (promotes)", t)
        watcher.stop()
        steps["drift onset → promotion"] = time.monotonic() - onset
        promoted = registry.aliases().get("champion") == challenger.version
        decided = watcher.seen_at
        if not promoted or decided is None:
            notes.append(
                f"the monitor did not promote: {check['decision']['reason']}; "
                "promoted by hand to time the swap"
            )
            decided = time.time()
            registry.promote(challenger.version, "bench: promotion drill", actor="bench")
        wait_for(
            lambda: answers.visible_at(decided, challenger.version) is not None,
            60,
            "clients to get the promoted version",
        )
        time.sleep(1.0)
        seen = answers.visible_at(decided, challenger.version)
        steps["promotion decision → clients answered by the new champion"] = seen - decided

        for drill in range(ROLLBACK_DRILLS):
            time.sleep(random.uniform(0.0, settings.alias_poll_interval_s))  # any poll phase
            back_to = registry.aliases().get("previous")
            decided = time.time()
            registry.rollback(f"bench: rollback drill {drill + 1}", actor="bench")
            wait_for(
                lambda v=str(back_to), d=decided: answers.visible_at(d, v) is not None,
                60,
                "clients to get the previous version back",
            )
            time.sleep(1.0)  # keep the load on after the swap: no flapping, no late failures
            rollbacks.append(answers.visible_at(decided, str(back_to)) - decided)
        steps["rollback decision → clients answered by the previous version (median)"] = (
            statistics.median(rollbacks)
        )
        steps["rollback decision → clients answered by the previous version (max)"] = max(rollbacks)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    failed = [r for r in answers.rows if r[2] != 200]
    print(
        json.dumps(
            {
                "steps": steps,
                "client_requests": len(answers.rows),
                "client_failed": len(failed),
                "client_errors": answers.errors[:5],
                "clients": CLIENTS,
                "poll_interval_s": settings.alias_poll_interval_s,
                "replay_failed": stats.failed,
                "promoted_by_monitor": promoted,
                "rollbacks_s": rollbacks,
                "versions": {"v1": first["version"], "challenger": challenger.version},
                "notes": notes,
            }
        )
    )


def _pause_schedules() -> None:
    """The monitor's 5-minute schedule must not act in the middle of a timing: turn the
    schedules off and drop the runs they already planned (the bench runs the monitor)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as prefect:
        for deployment in prefect.read_deployments():
            for schedule in deployment.schedules or []:
                prefect.update_deployment_schedule(deployment.id, schedule.id, active=False)
            planned = prefect.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )
            for run in planned:
                prefect.delete_flow_run(run.id)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    main()
