"""Alerts for real: monitor events → Prefect server automation → POST to a local receiver.

The Prefect server's own event pipeline (triggers and actions services) sends the
notification; the receiver is a stdlib HTTP server on a free port recording POST bodies.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.filters import AutomationFilter, AutomationFilterTags
from prefect.settings import PREFECT_API_URL, temporary_settings

from driftloop import procs
from pipelines.alerts import ALERT_KINDS, ALERT_TAG, ensure_alerts, remove_alerts

pytestmark = pytest.mark.integration

MODEL = "bikeshare-demand"
DELIVERY_TIMEOUT_S = 60.0


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.bodies.append(json.loads(raw))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep pytest output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.bodies)

    def wait_for(self, *needles: str) -> dict[str, Any]:
        """The first body whose text mentions every needle (polls up to the deadline)."""
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [b for b in self.received() if all(n in b.get("text", "") for n in needles)]
            return bool(found)

        try:
            procs.wait_until(arrived, DELIVERY_TIMEOUT_S, interval_s=0.25, what=f"POST {needles}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; the receiver got {self.received()}") from exc
        return found[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


@pytest.fixture(scope="module")
def prefect_api(prefect_server: procs.Server) -> Iterator[str]:
    """In-process Prefect settings pointed at the session's server."""
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.base_url}):
        yield prefect_server.base_url
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="module")
def alerts(prefect_api: str, receiver: Receiver) -> list[str]:
    first = ensure_alerts(receiver.url, MODEL)
    second = ensure_alerts(receiver.url, MODEL)
    assert first == second
    return second


def alert_automations() -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_automations(
            automations=AutomationFilter(tags=AutomationFilterTags(all_=[ALERT_TAG]))
        )


def emit(event: str, payload: dict[str, Any], model: str = MODEL) -> None:
    emitted = emit_event(
        event, resource={"prefect.resource.id": f"driftloop.model.{model}"}, payload=payload
    )
    assert emitted is not None, "emit_event sent nothing: PREFECT_API_URL not seen in-process"


def test_ensure_alerts_twice_keeps_one_automation_per_event(alerts: list[str]) -> None:
    automations = alert_automations()
    assert sorted(a.name for a in automations) == sorted(alerts)
    assert len(automations) == len(ALERT_KINDS)
    expected = {kind.event for kind in ALERT_KINDS}
    assert {event for a in automations for event in a.trigger.expect} == expected
    assert all(a.enabled for a in automations)


def test_rollback_posts_event_and_reason(alerts: list[str], receiver: Receiver) -> None:
    reason = f"champion rmse 80 vs previous 50 ({uuid.uuid4().hex[:8]})"
    emit(
        "driftloop.rollback",
        {
            "action": "rollback",
            "reason": reason,
            "moves": {"champion": ["3", "2"], "previous": ["2", None]},
            "actor": "monitor",
            "figures": {"champion_metric": 80.0, "previous_metric": 50.0},
        },
    )
    body = receiver.wait_for("driftloop.rollback", reason)
    assert body["source"] == "driftloop"
    assert MODEL in body["subject"] and "rolled back" in body["subject"]
    assert "champion 3 → 2" in body["body"]
    assert f"driftloop.model.{MODEL}" in body["body"]


@pytest.mark.parametrize(
    ("event", "payload", "title"),
    [
        (
            "driftloop.drift.detected",
            {"action": "retrain", "figures": {"drift_share": 0.75}, "notes": []},
            "drift detected",
        ),
        (
            "driftloop.promotion",
            {"action": "promote", "moves": {"champion": ["2", "3"]}, "actor": "monitor"},
            "promoted",
        ),
    ],
)
def test_drift_and_promotion_post(
    alerts: list[str], receiver: Receiver, event: str, payload: dict[str, Any], title: str
) -> None:
    reason = f"{event} check {uuid.uuid4().hex[:8]}"
    emit(event, {**payload, "reason": reason})
    body = receiver.wait_for(event, reason)
    assert title in body["subject"]


def test_other_models_events_do_not_notify(alerts: list[str], receiver: Receiver) -> None:
    other = f"not-watched {uuid.uuid4().hex[:8]}"
    emit("driftloop.rollback", {"reason": other}, model="another-model")
    mine = f"watched {uuid.uuid4().hex[:8]}"
    emit("driftloop.rollback", {"reason": mine})
    receiver.wait_for(mine)  # sent after the other one, so the other had its chance
    assert not [b for b in receiver.received() if other in b["text"]]


def test_without_a_model_every_model_notifies(alerts: list[str], receiver: Receiver) -> None:
    everywhere = ensure_alerts(receiver.url)
    try:
        assert set(everywhere).isdisjoint(alerts)
        reason = f"any model {uuid.uuid4().hex[:8]}"
        emit("driftloop.promotion", {"reason": reason}, model="another-model")
        assert "another-model" in receiver.wait_for(reason)["subject"]
    finally:
        remove_alerts()
        ensure_alerts(receiver.url, MODEL)  # leave the module's state as found


def test_a_new_url_retargets_the_alerts(alerts: list[str], receiver: Receiver) -> None:
    moved = Receiver()
    moved.thread.start()
    try:
        assert ensure_alerts(moved.url, MODEL) == alerts
        assert len(alert_automations()) == len(ALERT_KINDS)
        reason = f"after the URL changed {uuid.uuid4().hex[:8]}"
        emit("driftloop.rollback", {"reason": reason})
        moved.wait_for(reason)
        assert not [b for b in receiver.received() if reason in b["text"]]
    finally:
        ensure_alerts(receiver.url, MODEL)  # leave the module's state as found
        moved.server.shutdown()
        moved.server.server_close()


def test_remove_alerts_deletes_them(alerts: list[str], receiver: Receiver) -> None:
    assert sorted(remove_alerts(MODEL)) == sorted(alerts)
    assert alert_automations() == []
    ensure_alerts(receiver.url, MODEL)
    assert sorted(remove_alerts()) == sorted(alerts)
    assert alert_automations() == []
    assert remove_alerts() == []  # nothing left, the block included: no error
    assert ensure_alerts(receiver.url, MODEL) == alerts  # leave the module's state as found
