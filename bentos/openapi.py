"""The service describes itself: BentoML's OpenAPI document (`/docs.json`, shown by the
Swagger UI at `/`) completed with what only the running service knows.

BentoML writes the document at import time from the API signatures: a generic title, no
version, ``records: [{additionalProp1: {}}]`` as the example (which gets a 422). The
gateway hands each `/docs.json` answer to `document()` with the live champion's details:
the model and version served, the features with their types, an example built from the
version's own input example (so "Try it out" answers 200), the label rule, the limits,
and the gateway's own endpoints (`/metadata`, `/healthz`, `/readyz`).
"""

from __future__ import annotations

import copy
from typing import Any

# Example values for a feature type when the version logged no input example.
_TYPE_EXAMPLES: dict[str, Any] = {
    "double": 0.5,
    "float": 0.5,
    "long": 1,
    "integer": 1,
    "boolean": True,
    "string": "a",
    "datetime": "2011-04-01T08:00:00",
}

_GATEWAY_PATHS: dict[str, tuple[str, str]] = {
    "/metadata": (
        "What is served and how",
        "The model, the champion/challenger/previous versions and their load state, routing "
        "(canary share, shadow), the feature schema and label rule, batching, the "
        "prediction log's state and the limits. Needs the API key when one is set.",
    ),
    "/healthz": ("Liveness", "200 while the process answers (also during start-up)."),
    "/readyz": (
        "Readiness",
        "200 when /predict can succeed (a champion loaded, the prediction log writable); "
        "503 with the reason otherwise.",
    ),
}


def example_record(details: dict[str, Any]) -> dict[str, Any]:
    """One record that passes the champion's schema: its logged input example's first row,
    else a value per feature type."""
    example = details.get("example_record")
    if isinstance(example, dict) and example:
        return example
    return {
        f["name"]: _TYPE_EXAMPLES.get(str(f.get("type")))
        for f in details.get("features") or []
        if f.get("required", True)
    }


def features_table(features: list[dict[str, Any]]) -> str:
    lines = ["| feature | type | required |", "|---|---|---|"]
    lines += [
        f"| `{f['name']}` | {f.get('type', '?')} | {'yes' if f.get('required', True) else 'no'} |"
        for f in features
    ]
    return "\n".join(lines)


def _description(model: str, champion: Any, details: dict[str, Any]) -> str:
    """The document's Markdown introduction: what answers, the key, limits, features, labels."""
    features = details.get("features") or []
    parts = [
        f"Predictions of the registered MLflow model **{model}**: the `champion` alias answers"
        + (f" (now **v{champion}**)" if champion else "")
        + ", a `challenger` gets its canary share or runs in shadow, and promotions and "
        "rollbacks in the registry apply without a restart. Every prediction is logged "
        "before it is answered; `POST /feedback` sends the ground truth later.",
        "",
        "**Authentication**: " + details.get("auth", "none"),
    ]
    if details.get("max_records") and details.get("max_body_bytes"):
        parts += [
            "",
            f"**Limits**: {details['max_records']:,} records and "
            f"{details['max_body_bytes'] // 1024:,} KiB per request.",
        ]
    if features:
        parts += ["", "**Features** (one record per prediction):", "", features_table(features)]
        parts += [
            "",
            "Optional per record: `request_id` (your id, echoed; labels refer to it) and "
            "`entity_id` (keeps an entity on the same version).",
        ]
    if details.get("label_rule"):
        parts += ["", f"**Labels** (`/feedback`): {details['label_rule']}"]
    return "\n".join(parts)


def document(spec: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document with the live service's details (a new dict)."""
    doc = copy.deepcopy(spec)
    model = details.get("model_name") or "model"
    champion = details.get("champion_version")
    info = doc.setdefault("info", {})
    info["title"] = f"{model} — driftloop"
    info["version"] = f"champion v{champion}" if champion else "no champion loaded"
    info["description"] = _description(model, champion, details)

    record = example_record(details)
    paths = doc.setdefault("paths", {})
    predict = (paths.get("/predict") or {}).get("post")
    if predict is not None and record:
        predict["summary"] = "Predict"
        predict["description"] = (
            "Answers `predictions` (one per record, in order), `request_ids`, "
            "`model_version` and, for a classifier, `probabilities`. A record that fails "
            "the schema gets a 422 naming the record and the field."
        )
        body = {"records": [{**record, "request_id": "example-1"}]}
        content = predict.setdefault("requestBody", {}).setdefault("content", {})
        content.setdefault("application/json", {})["example"] = body
    feedback = (paths.get("/feedback") or {}).get("post")
    if feedback is not None:
        feedback["summary"] = "Send labels"
        content = feedback.setdefault("requestBody", {}).setdefault("content", {})
        content.setdefault("application/json", {})["example"] = {
            "labels": [{"request_id": "example-1", "label": details.get("example_label", 1)}]
        }
    for path, (summary, description) in _GATEWAY_PATHS.items():
        paths.setdefault(
            path,
            {
                "get": {
                    "summary": summary,
                    "description": description,
                    "tags": ["driftloop"],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        )
    return doc
