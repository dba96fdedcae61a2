"""The service describes itself: `/docs.json` names the model and the champion, lists the
features with their types, and carries an example that passes the schema."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bentos.gateway import Gateway, GatewayConfig
from bentos.openapi import document, example_record

# The shape BentoML 1.4 writes for `predict(records: list[dict])` (abridged).
BENTOML_SPEC = {
    "openapi": "3.0.2",
    "info": {"title": "driftloop", "version": "None", "description": "boilerplate"},
    "paths": {
        "/predict": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PredictInput"}
                        }
                    }
                }
            }
        },
        "/feedback": {"post": {"requestBody": {"content": {"application/json": {}}}}},
    },
}
FEATURES = [
    {"name": "temp", "type": "double", "required": True},
    {"name": "season", "type": "string", "required": True},
    {"name": "hr", "type": "long", "required": False},
]
DETAILS = {
    "model_name": "bikeshare-demand",
    "champion_version": "3",
    "features": FEATURES,
    "example_record": {"temp": 0.24, "season": "winter", "hr": 8},
    "auth": "`Authorization: Bearer <DRIFTLOOP_API_KEY>`",
    "max_records": 10_000,
    "max_body_bytes": 1_048_576,
    "label_rule": "a number (target `bikers`)",
    "example_label": 12.0,
}


def test_the_document_names_the_model_the_champion_and_the_features() -> None:
    doc = document(BENTOML_SPEC, DETAILS)
    assert doc["info"]["title"] == "bikeshare-demand — driftloop"
    assert doc["info"]["version"] == "champion v3"
    text = doc["info"]["description"]
    for words in ("| `temp` | double | yes |", "| `hr` | long | no |", "now **v3**", "10,000"):
        assert words in text, words
    assert "a number (target `bikers`)" in text
    example = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert example["example"] == {
        "records": [{"temp": 0.24, "season": "winter", "hr": 8, "request_id": "example-1"}]
    }
    labels = doc["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert labels["example"] == {"labels": [{"request_id": "example-1", "label": 12.0}]}
    for path in ("/metadata", "/healthz", "/readyz"):
        assert doc["paths"][path]["get"]["summary"]
    assert BENTOML_SPEC["info"]["title"] == "driftloop"  # the input is left as it was


def test_without_an_input_example_each_required_feature_gets_a_value_of_its_type() -> None:
    assert example_record({"features": FEATURES}) == {"temp": 0.5, "season": "a"}
    doc = document(BENTOML_SPEC, {"model_name": "m"})  # no champion loaded yet
    assert doc["info"]["version"] == "no champion loaded"
    assert "example" not in json.dumps(doc["paths"]["/predict"])


class DocsBackend:
    gateway_config = GatewayConfig(api_key=None, max_body_bytes=1_000)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def metadata(self) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def docs_details(self) -> dict[str, Any]:
        return DETAILS


async def bentoml_docs(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for BentoML's /docs.json."""
    body = json.dumps(BENTOML_SPEC).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_the_gateway_completes_bentomls_document() -> None:
    app = Gateway(bentoml_docs, backend=DocsBackend)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/docs.json")

    answer = asyncio.run(get())
    assert answer.status_code == 200
    assert answer.json()["info"]["title"] == "bikeshare-demand — driftloop"
    assert int(answer.headers["content-length"]) == len(answer.content)
