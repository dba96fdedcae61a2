"""The HTTP front door without a server: auth, 401/413/415/422, GET endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bentos.gateway import Gateway, GatewayConfig, bearer_token, feedback_scope, keys_match


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
    def __init__(
        self, api_key: str | None, feedback_key: str | None = None, with_api_key: bool = False
    ) -> None:
        scope = feedback_scope(api_key, feedback_key, with_api_key)
        self.gateway_config = GatewayConfig(
            api_key=api_key, max_body_bytes=200, scopes={"/feedback": scope}
        )

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


LABELS = {"labels": [{"request_id": "r1", "label": 1}]}


@pytest.mark.parametrize(
    ("api_key", "feedback_key", "with_api_key", "sent", "status", "says"),
    [
        # a feedback key: only it posts labels; the predict key is known but refused
        ("k3y", "fb", False, "fb", 200, None),
        ("k3y", "fb", False, "k3y", 403, "this key cannot post labels"),
        ("k3y", "fb", True, "k3y", 403, "this key cannot post labels"),
        ("k3y", "fb", False, None, 401, "feedback key"),
        ("k3y", "fb", False, "wrong", 401, "feedback key"),
        (None, "fb", False, None, 401, "feedback key"),
        (None, "fb", False, "fb", 200, None),
        # an API key without a feedback key: labels refused unless explicitly allowed
        ("k3y", None, False, "k3y", 403, "set DRIFTLOOP_FEEDBACK_API_KEY"),
        ("k3y", None, False, None, 403, "set DRIFTLOOP_FEEDBACK_API_KEY"),
        ("k3y", None, True, "k3y", 200, None),
        ("k3y", None, True, None, 401, "Bearer"),
        # no key at all (loopback dev mode): open
        (None, None, False, None, 200, None),
    ],
)
def test_feedback_has_its_own_key_scope(
    api_key: str | None,
    feedback_key: str | None,
    with_api_key: bool,
    sent: str | None,
    status: int,
    says: str | None,
) -> None:
    headers = {"authorization": f"Bearer {sent}"} if sent else {}
    backend = Backend(api_key, feedback_key, with_api_key)
    response = call(backend, "POST", "/feedback", json=LABELS, headers=headers)
    assert response.status_code == status
    if says is not None:
        assert says in response.json()["detail"]
    else:
        assert json.loads(response.json()["got"]) == LABELS


def test_the_feedback_key_does_not_predict() -> None:
    backend = Backend("k3y", "fb")
    refused = call(backend, "POST", "/predict", json=BODY, headers={"authorization": "Bearer fb"})
    assert refused.status_code == 401
    ok = call(backend, "POST", "/predict", json=BODY, headers={"authorization": "Bearer k3y"})
    assert ok.status_code == 200
