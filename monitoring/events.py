"""The Prefect events the monitor emits (and the alerts react to), named once.

Each is emitted on the resource `driftloop.model.<name>` (`model_resource`).
"""

from __future__ import annotations

MODEL_RESOURCE_PREFIX = "driftloop.model."
DRIFT_DETECTED = "driftloop.drift.detected"
RETRAIN_PENDING = "driftloop.retrain.pending"
PROMOTION = "driftloop.promotion"
ROLLBACK = "driftloop.rollback"
CHALLENGER_RETIRED = "driftloop.challenger.retired"


def model_resource(model_name: str) -> dict[str, str]:
    """The event's resource: the model it is about."""
    return {"prefect.resource.id": MODEL_RESOURCE_PREFIX + model_name}
