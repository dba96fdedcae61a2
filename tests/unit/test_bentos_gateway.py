"""The HTTP front door without a server: auth, 401/413/415/422, GET endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bentos.gateway import Gateway, GatewayConfig, bearer_token, keys_match


def test_keys_match_only_the_exact_key() -> None:
    assert keys_match("s3cret", "s3cret")
    assert not keys_match("s3cre", "s3cret")
    assert not keys_match("s3cret ", "s3cret")
    assert not keys_match(None, "s3cret")
    assert keys_match("clé", "clé")  # non-ASCII keys compare as bytes


def test_bearer_token_parsing() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer")]) is None
    assert bearer_token([]) is None


class Backend:
    def __init__(self, api_key: str | None) -> None:
        self.gateway_config = GatewayConfig(api_key=api_key, max_body_bytes=200)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "alive"}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "degraded"}

    def metadata(self) -> tuple[int, dict[str, Any]]:
        return 200, {"model_name": "m"}


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for BentoML: answers with the body it received."""
    message = await receive()
    body = message.get("body", b"")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"got": body.decode()}).encode()})


def call(backend: Backend | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
    app = Gateway(echo_app, backend=lambda: backend)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


BODY = {"records": [{"temp": 1}]}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "Token k3y"}, 401),
        ({"authorization": "Bearer k3y"}, 200),
    ],
)
def test_predict_needs_the_bearer_key_when_one_is_set(headers: dict[str, str], status: int) -> None:
    response = call(Backend("k3y"), "POST", "/predict", json=BODY, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]
    else:
        assert json.loads(response.json()["got"]) == BODY  # body passed on intact


def test_without_a_key_no_auth_is_needed() -> None:
    assert call(Backend(None), "POST", "/predict", json=BODY).status_code == 200


@pytest.mark.parametrize(
    "content_type", ["application/vnd.bentoml+pickle", "text/plain", "multipart/form-data"]
)
def test_only_json_is_accepted(content_type: str) -> None:
    response = call(
        Backend(None), "POST", "/predict", content=b"x", headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert content_type in response.json()["detail"]


def test_bodies_over_the_limit_get_413_even_without_content_length() -> None:
    big = {"records": [{"temp": 1.0}] * 50}
    assert call(Backend(None), "POST", "/predict", json=big).status_code == 413

    async def chunks() -> Any:  # streamed: no Content-Length header
        for _ in range(10):
            yield b" " * 50

    response = call(
        Backend(None),
        "POST",
        "/predict",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "200 bytes" in response.json()["detail"]


def test_envelope_errors_use_the_422_detail_shape() -> None:
    response = call(Backend(None), "POST", "/predict", json={"rows": [{"a": 1}]})
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json()["detail"]]
    assert ["body", "rows"] in locs and ["records"] in locs
    response = call(Backend(None), "POST", "/feedback", json={"labels": [1]})
    assert response.json()["detail"][0]["loc"] == ["labels", 0]
    response = call(
        Backend(None),
        "POST",
        "/predict",
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"][0]["msg"].startswith("invalid JSON")


def test_get_endpoints_are_answered_by_the_backend() -> None:
    assert call(Backend(None), "GET", "/readyz").json() == {"status": "degraded"}
    assert call(Backend(None), "GET", "/metadata").json() == {"model_name": "m"}
    assert call(None, "GET", "/healthz").status_code == 200
    starting = call(None, "GET", "/readyz")
    assert starting.status_code == 503 and starting.json()["status"] == "starting"
    assert call(None, "POST", "/predict", json=BODY).status_code == 503
