"""Alerts: the monitor's events notify a webhook through Prefect, not a sender of our own.

The `act` task of the monitor flow emits the events `monitoring.events` names on the
resource `driftloop.model.<name>`. Here we keep, in
the Prefect server at `PREFECT_API_URL`:

- one `CustomWebhookNotificationBlock` named `driftloop-alerts` that POSTs JSON
  (`text`, `subject`, `body`, `source`) to the configured URL, and
- one automation per event kind: a reactive `EventTrigger` (threshold 1, within 0) and a
  `SendNotification` action whose Jinja templates the server renders from the event.

The Prefect server does the rest (events → triggers → actions → HTTP POST). The spec
builders are pure so the unit tests check them without a server.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlparse
from uuid import UUID

from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from monitoring import events

BLOCK_NAME = "driftloop-alerts"
ALERT_TAG = "driftloop-alert"


@dataclass(frozen=True)
class AlertKind:
    """One kind of monitor event that notifies: its short key, event name and title."""

    key: str
    event: str
    title: str


ALERT_KINDS: tuple[AlertKind, ...] = (
    AlertKind("drift", events.DRIFT_DETECTED, "drift detected, retraining"),
    AlertKind("promotion", events.PROMOTION, "challenger promoted"),
    AlertKind("rollback", events.ROLLBACK, "champion rolled back"),
    AlertKind(
        "retrain-pending", events.RETRAIN_PENDING, "drift detected, retrain waits for labels"
    ),
    AlertKind("challenger-retired", events.CHALLENGER_RETIRED, "challenger retired"),
)

# The JSON document the webhook receives. `{{subject}}`/`{{body}}` are the block's own
# placeholders (filled with the rendered action templates), not Jinja.
WEBHOOK_JSON: dict[str, str] = {
    "source": "driftloop",
    "subject": "{{subject}}",
    "body": "{{body}}",
    "text": "{{subject}}\n{{body}}",  # what Slack/Mattermost-style receivers show
}

# Jinja, rendered by the Prefect server with the triggering event in `event`. The
# payload is `AliasMove.to_dict()` (promotion, rollback) or `Decision.to_dict()` (drift).
MODEL_TEMPLATE = "{{ event.resource.id | replace('" + events.MODEL_RESOURCE_PREFIX + "', '') }}"
BODY_TEMPLATE = (
    "{{ event.event }} on {{ event.resource.id }} at {{ event.occurred }}\n"
    "reason: {{ event.payload.reason or '(none given)' }}\n"
    "{% if event.payload.moves %}aliases: "
    "{% for alias, pair in event.payload.moves | dictsort %}"
    "{{ alias }} {{ pair[0] or '-' }} → {{ pair[1] or '-' }}"
    "{% if not loop.last %}, {% endif %}"
    "{% endfor %}\n{% endif %}"
    "{% if event.payload.figures %}figures: {{ event.payload.figures | tojson }}\n{% endif %}"
    "event id: {{ event.id }}"
)


def subject_template(kind: AlertKind) -> str:
    """`[driftloop] <model>: <what happened>` (Jinja)."""
    return f"[driftloop] {MODEL_TEMPLATE}: {kind.title}"


def automation_name(kind: AlertKind, model_name: str | None = None) -> str:
    """Stable name, so re-running updates the automation instead of adding one."""
    scope = model_name or "all-models"
    return f"driftloop-alert-{kind.key}-{scope}"


def check_webhook_url(webhook_url: str) -> str:
    """The URL unchanged if it is an absolute http(s) URL; a usable error otherwise."""
    parsed = urlparse(webhook_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"alert webhook URL {webhook_url!r} is not an absolute http(s) URL; "
            "set DRIFTLOOP_ALERT_WEBHOOK_URL (or --webhook) to e.g. https://hooks.example.com/x"
        )
    return webhook_url


def webhook_block(webhook_url: str) -> CustomWebhookNotificationBlock:
    """The notification block that POSTs `WEBHOOK_JSON` to `webhook_url` (not saved)."""
    return CustomWebhookNotificationBlock(
        name="driftloop",
        url=check_webhook_url(webhook_url),
        method="POST",
        json_data=dict(WEBHOOK_JSON),
    )


def alert_trigger(kind: AlertKind, model_name: str | None = None) -> EventTrigger:
    """Fire once per `kind.event` on one model's resource (or any driftloop model)."""
    resource = events.MODEL_RESOURCE_PREFIX + (model_name or "*")
    return EventTrigger(
        expect={kind.event},
        match={"prefect.resource.id": resource},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )


def alert_action(kind: AlertKind, block_document_id: UUID) -> SendNotification:
    """Send the rendered subject/body through the saved notification block."""
    return SendNotification(
        block_document_id=block_document_id,
        subject=subject_template(kind),
        body=BODY_TEMPLATE,
    )


def alert_automation(
    kind: AlertKind, block_document_id: UUID, model_name: str | None = None
) -> Automation:
    """The whole automation for one event kind (not yet created on a server)."""
    scope = f"model {model_name}" if model_name else "every driftloop model"
    return Automation(
        name=automation_name(kind, model_name),
        description=f"Notify the driftloop webhook on {kind.event} for {scope}.",
        enabled=True,
        tags=[ALERT_TAG],
        trigger=alert_trigger(kind, model_name),
        actions=[alert_action(kind, block_document_id)],
    )


# -- server side ----------------------------------------------------------------------------


def _require_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError(
            "PREFECT_API_URL is not set: alerts live in a Prefect server. Start one with "
            "`driftloop up` or point PREFECT_API_URL at a running server (…/api)."
        )
    return url


def ensure_alerts(webhook_url: str, model_name: str | None = None) -> list[str]:
    """Create or update the webhook block and one automation per event kind; idempotent.

    With `model_name` the automations match only that model's events, otherwise every
    `driftloop.model.*` resource. Returns the automation names.
    """
    from prefect.client.orchestration import get_client

    _require_api_url()
    block_id = webhook_block(webhook_url).save(BLOCK_NAME, overwrite=True)
    names: list[str] = []
    with get_client(sync_client=True) as client:
        for kind in ALERT_KINDS:
            wanted = alert_automation(kind, block_id, model_name)
            existing = client.read_automations_by_name(wanted.name)
            if existing:
                wanted.id = existing[0].id
                wanted.update()
                for duplicate in existing[1:]:  # left by an earlier concurrent run
                    client.delete_automation(duplicate.id)
            else:
                wanted.create()
            names.append(wanted.name)
    return names


def remove_alerts(model_name: str | None = None) -> list[str]:
    """Delete driftloop alert automations; returns the names deleted.

    With `model_name`, only that model's automations go. Without it, every automation
    tagged `driftloop-alert` and the `driftloop-alerts` block go.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import AutomationFilter, AutomationFilterTags
    from prefect.exceptions import ObjectNotFound

    _require_api_url()
    deleted: list[str] = []
    with get_client(sync_client=True) as client:
        if model_name is not None:
            targets = [
                automation
                for kind in ALERT_KINDS
                for automation in client.read_automations_by_name(automation_name(kind, model_name))
            ]
        else:
            tagged = AutomationFilter(tags=AutomationFilterTags(all_=[ALERT_TAG]))
            targets = client.read_automations(automations=tagged)
        for automation in targets:
            client.delete_automation(automation.id)
            deleted.append(automation.name)
        if model_name is None:
            with contextlib.suppress(ObjectNotFound):
                client.delete_block_document(
                    client.read_block_document_by_name(
                        BLOCK_NAME,
                        block_type_slug=CustomWebhookNotificationBlock.get_block_type_slug(),
                    ).id
                )
    return deleted
