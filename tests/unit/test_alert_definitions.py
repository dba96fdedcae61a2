"""The alert definitions without a server: names, triggers, actions, templates, JSON shape.

Templates are rendered with the Prefect server's own sandboxed renderer, on the same
event type the server hands to `SendNotification`, so what passes here is what a
webhook receives.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.events.schemas.automations import Posture
from prefect.server.events.actions import SendNotification as ServerSendNotification
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.utilities.user_templates import render_user_template_sync

from pipelines.alerts import (
    ALERT_KINDS,
    ALERT_TAG,
    BODY_TEMPLATE,
    WEBHOOK_JSON,
    AlertKind,
    alert_action,
    alert_automation,
    alert_trigger,
    automation_name,
    subject_template,
    webhook_block,
)

KINDS = {kind.key: kind for kind in ALERT_KINDS}
BLOCK_ID = uuid.UUID("00000000-0000-0000-0000-0000000000a1")

ROLLBACK_PAYLOAD = {  # AliasMove.to_dict()
    "at": "2025-01-01T00:00:00+00:00",
    "action": "rollback",
    "moves": {"champion": ["3", "2"], "previous": ["2", None]},
    "reason": "champion rmse 80 vs previous 50",
    "actor": "monitor",
    "figures": {"champion_metric": 80.0, "previous_metric": 50.0},
}
DRIFT_PAYLOAD = {  # Decision.to_dict()
    "action": "retrain",
    "reason": "drift share 0.75 ≥ 0.5",
    "from_version": None,
    "to_version": None,
    "notes": [],
    "figures": {"drift_share": 0.75},
}


def event(name: str, payload: dict[str, Any], model: str = "bikeshare-demand") -> ReceivedEvent:
    return ReceivedEvent(
        event=name,
        resource={"prefect.resource.id": f"driftloop.model.{model}"},
        payload=payload,
        id=uuid.uuid4(),
        occurred=datetime(2025, 1, 1, tzinfo=UTC),
    )


def render(template: str, evt: ReceivedEvent) -> str:
    return render_user_template_sync(template, {"event": evt})


def test_one_kind_per_monitor_event() -> None:
    import re

    import pipelines.monitor
    from monitoring import events

    source = Path(pipelines.monitor.__file__).read_text()
    names = re.findall(r"emit\(settings, events\.([A-Z_]+)", source)
    emitted = {getattr(events, name) for name in names}
    assert (
        {kind.event for kind in ALERT_KINDS}
        == emitted
        == {
            "driftloop.drift.detected",
            "driftloop.retrain.pending",
            "driftloop.challenger.retired",
            "driftloop.promotion",
            "driftloop.rollback",
        }
    )


def test_automation_names_are_stable_and_distinct_per_kind_and_scope() -> None:
    names = [automation_name(k, m) for k in ALERT_KINDS for m in (None, "a", "b")]
    assert len(set(names)) == len(names)
    assert automation_name(KINDS["rollback"], "a") == automation_name(KINDS["rollback"], "a")
    assert automation_name(KINDS["drift"], None) == "driftloop-alert-drift-all-models"


@pytest.mark.parametrize(
    ("model", "resource"),
    [("bikeshare-demand", "driftloop.model.bikeshare-demand"), (None, "driftloop.model.*")],
)
@pytest.mark.parametrize("kind", ALERT_KINDS, ids=lambda k: k.key)
def test_trigger_fires_on_every_single_event_of_its_kind(
    kind: AlertKind, model: str | None, resource: str
) -> None:
    trigger = alert_trigger(kind, model)
    assert trigger.expect == {kind.event}
    assert trigger.posture == Posture.Reactive
    assert trigger.threshold == 1
    assert trigger.within == timedelta(0)
    assert trigger.match.model_dump() == {"prefect.resource.id": resource}


def test_automation_sends_through_the_block_and_is_tagged() -> None:
    automation = alert_automation(KINDS["promotion"], BLOCK_ID, "bikeshare-demand")
    assert automation.name == automation_name(KINDS["promotion"], "bikeshare-demand")
    assert automation.enabled
    assert automation.tags == [ALERT_TAG]
    (action,) = automation.actions
    assert action.type == "send-notification"
    assert action.block_document_id == BLOCK_ID


@pytest.mark.parametrize("kind", ALERT_KINDS, ids=lambda k: k.key)
def test_the_server_accepts_the_templates(kind: AlertKind) -> None:
    action = alert_action(kind, BLOCK_ID)
    ServerSendNotification.model_validate(action.model_dump())  # raises on a bad template


def test_rollback_body_names_event_model_reason_and_moves() -> None:
    evt = event("driftloop.rollback", ROLLBACK_PAYLOAD)
    subject = render(subject_template(KINDS["rollback"]), evt)
    body = render(BODY_TEMPLATE, evt)
    assert subject == "[driftloop] bikeshare-demand: champion rolled back"
    assert "driftloop.rollback on driftloop.model.bikeshare-demand" in body
    assert "reason: champion rmse 80 vs previous 50" in body
    assert "aliases: champion 3 → 2, previous 2 → -" in body
    assert '"champion_metric": 80.0' in body
    assert f"event id: {evt.id}" in body


def test_drift_body_has_reason_and_figures_but_no_alias_line() -> None:
    body = render(BODY_TEMPLATE, event("driftloop.drift.detected", DRIFT_PAYLOAD))
    assert "reason: drift share 0.75 ≥ 0.5" in body
    assert '"drift_share": 0.75' in body
    assert "aliases:" not in body


def test_body_survives_an_empty_payload() -> None:
    body = render(BODY_TEMPLATE, event("driftloop.promotion", {}))
    assert "driftloop.promotion on driftloop.model.bikeshare-demand" in body
    assert "reason: (none given)" in body


def test_block_posts_subject_and_body_as_json() -> None:
    block = webhook_block("https://hooks.example.com/x")
    assert block.method == "POST"
    assert block.url == "https://hooks.example.com/x"
    # What the block hands to httpx when the server calls notify(body, subject).
    request = block._build_request_args("the body", "the subject")
    assert request["json"] == {
        "source": "driftloop",
        "subject": "the subject",
        "body": "the body",
        "text": "the subject\nthe body",
    }
    assert set(WEBHOOK_JSON) == set(request["json"])


@pytest.mark.parametrize("url", ["", "hooks.example.com/x", "ftp://example.com/x", "http://"])
def test_bad_webhook_url_is_refused_with_the_fix(url: str) -> None:
    with pytest.raises(ValueError, match="DRIFTLOOP_ALERT_WEBHOOK_URL"):
        webhook_block(url)
