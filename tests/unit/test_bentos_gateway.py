"""The HTTP front door without a server: auth, 401/413/415/422, GET endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bentos.gateway import (
    Gateway,
    GatewayConfig,
    bearer_token,
    feedback_scope,
    keys_match,
    parse_in_steps,
    parsed_list,
    split_records,
)
from predlog import jsonio


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
        self,
        api_key: str | None,
        feedback_key: str | None = None,
        with_api_key: bool = False,
        **config: Any,
    ) -> None:
        config.setdefault("max_body_bytes", 200)
        scope = feedback_scope(api_key, feedback_key, with_api_key)
        self.gateway_config = GatewayConfig(api_key=api_key, scopes={"/feedback": scope}, **config)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "alive"}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "degraded"}

    def metadata(self) -> tuple[int, dict[str, Any]]:
        return 200, {"model_name": "m"}


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for BentoML: answers with the body and content type it received."""
    message = await receive()
    body = message.get("body", b"")
    types = [v.decode() for k, v in scope["headers"] if k.lower() == b"content-type"]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    answer = {"got": body.decode(), "content_type": types, "parsed": parsed_list()}
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def call(
    backend: Backend | None,
    method: str,
    path: str,
    client: tuple[str, int] = ("127.0.0.1", 123),
    **kwargs: Any,
) -> httpx.Response:
    app = Gateway(echo_app, backend=lambda: backend)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, **kwargs)

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
        # BentoML gets an empty list; the API reads the list the gateway parsed
        assert json.loads(response.json()["got"]) == {"records": []}
        assert response.json()["parsed"] == BODY["records"]


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
        assert response.json()["parsed"] == LABELS["labels"]


def test_the_feedback_key_does_not_predict() -> None:
    backend = Backend("k3y", "fb")
    refused = call(backend, "POST", "/predict", json=BODY, headers={"authorization": "Bearer fb"})
    assert refused.status_code == 401
    ok = call(backend, "POST", "/predict", json=BODY, headers={"authorization": "Bearer k3y"})
    assert ok.status_code == 200


# -- hostile input: every malformed body gets a 4xx that names the problem ---------------


def raw(body: bytes, backend: Backend | None = None, **headers: str) -> httpx.Response:
    backend = backend or Backend(None, max_body_bytes=1_000_000, max_records=1000)
    return call(
        backend,
        "POST",
        "/predict",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (b'{"records":' + b"[" * 5000 + b"]" * 5000 + b"}", ["body"], "nested deeper"),
        (b'{"records":[{"a":"\\ud800"}]}', ["body", "records", 0, "a"], "lone UTF-16 surrogate"),
        (b'{"records":[{"\\udfff":1}]}', ["body", "records", 0, r"\udfff"], "surrogate in a key"),
        (b'{"records":[{"a":1' + b"0" * 400 + b"}]}", ["body", "records", 0, "a"], "64 bits"),
        (b'{"records":[{"a":-1' + b"0" * 400 + b"}]}", ["body", "records", 0, "a"], "64 bits"),
        (b'{"records":[{"a":1e400}]}', ["body", "records", 0, "a"], "not a JSON number"),
        (b'{"records":[{"a":NaN}]}', ["body", "records", 0, "a"], "not a JSON number"),
        (b'{"records":[{"a":-Infinity}]}', ["body", "records", 0, "a"], "not a JSON number"),
        (b'{"records":[{"a":1' + b"0" * 5000 + b"}]}", ["body"], "invalid JSON"),
        (b'\xef\xbb\xbf{"records":[{"a":1}]}', ["body"], "byte order mark"),
        ('{"records":[{"a":"é"}]}'.encode("latin-1"), ["body"], "UTF-8"),
        (b'{"records":[{"a":1}]', ["body"], "invalid JSON"),
        (b"", ["body"], "invalid JSON"),
    ],
)
def test_bodies_that_are_not_strict_json_get_400_naming_where(
    body: bytes, loc: list[Any], words: str
) -> None:
    response = raw(body)
    assert response.status_code == 400, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == loc
    assert words in problem["msg"]


def test_nesting_orjson_takes_but_records_never_need_is_refused_with_its_path() -> None:
    deep = b'{"records":[{"a":1},{"b":' + b"[" * 40 + b"]" * 40 + b"}]}"
    response = raw(deep)
    assert response.status_code == 400
    [problem] = response.json()["detail"]
    assert problem["type"] == "json_depth" and problem["loc"][:3] == ["records", 1, "b"]
    flat = b'{"records":[{"a":"[[[[{{{{"}]}'  # brackets inside strings are not nesting
    assert raw(flat).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "loc", "words"),
    [
        ({"records": []}, 422, ["records"], "non-empty list"),
        ({"records": {}}, 422, ["records"], "non-empty list"),
        ({"records": "x"}, 422, ["records"], "non-empty list"),
        ({"records": None}, 422, ["records"], "non-empty list"),
        ([{"a": 1}], 422, ["body"], "expected a JSON object"),
        ("records", 422, ["body"], "expected a JSON object"),
        (None, 422, ["body"], "expected a JSON object"),
        ({}, 422, ["records"], "missing field 'records'"),
        ({"records": [1, "a", None, [1]]}, 422, ["records", 0], "expected an object, got 1"),
        ({"records": [{}] * 1001}, 422, ["records"], "max_records_per_request"),
    ],
)
def test_bodies_of_the_wrong_shape_get_422_naming_the_field(
    body: Any, status: int, loc: list[Any], words: str
) -> None:
    response = raw(json.dumps(body).encode())
    assert response.status_code == status, response.text
    problem = response.json()["detail"][0]
    assert problem["loc"] == loc and words in problem["msg"], problem


def test_non_object_records_are_listed_up_to_the_cap() -> None:
    response = raw(json.dumps({"records": [1] * 500}).encode())
    detail = response.json()["detail"]
    assert response.status_code == 422 and len(detail) == 20
    assert [d["loc"] for d in detail[:2]] == [["records", 0], ["records", 1]]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=UTF-8",
        'application/json;charset="utf8"',
        "application/x+json",
        "application/problem+json; charset=utf-8",
    ],
)
def test_json_content_type_variants_reach_bentoml_as_plain_json(content_type: str) -> None:
    response = raw(b'{"records":[{"a":1}]}', **{"content-type": content_type})
    assert response.status_code == 200
    assert response.json()["content_type"] == ["application/json"]


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("application/json; charset=latin-1", "charset 'latin-1'"),
        ("application/json; charset=utf-16", "charset 'utf-16'"),
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "x-www-form-urlencoded"),
        ("", "(none)"),
    ],
)
def test_other_content_types_and_charsets_get_415(content_type: str, words: str) -> None:
    response = raw(b'{"records":[{"a":1}]}', **{"content-type": content_type})
    assert response.status_code == 415
    assert words in response.json()["detail"]


def test_a_missing_content_type_gets_415() -> None:
    app = Gateway(echo_app, backend=lambda: Backend(None))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            request = client.build_request("POST", "/predict", content=b'{"records":[{}]}')
            assert "content-type" not in request.headers
            return await client.send(request)

    response = asyncio.run(go())
    assert response.status_code == 415 and "(none)" in response.json()["detail"]


def test_large_bodies_are_checked_off_the_event_loop_with_the_same_answers() -> None:
    big = {"records": [{"a": 1.5, "b": "x" * 50}] * 2000}  # > INLINE_PARSE_BYTES
    backend = Backend(None, max_body_bytes=1_000_000, max_records=5000)
    body = json.dumps(big).encode()
    assert len(body) > 64 * 1024
    assert raw(body, backend).status_code == 200
    bad = json.dumps({"records": [{"a": 1}] * 2000 + [7]}).encode() + b" " * 70_000
    response = raw(bad, backend)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["records", 2000]


def _records(n: int, text: str = "ok") -> list[dict[str, Any]]:
    return [{"a": i, "b": 1.5, "s": text if i % 3 == 0 else "x"} for i in range(n)]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"records": _records(4000)}).encode(),
        json.dumps({"records": _records(4000)}, separators=(",", ":")).encode(),
        b" \n" + json.dumps({"records": _records(4000)}, indent=1).encode() + b"\n ",
    ],
)
def test_a_large_envelope_parsed_in_steps_equals_one_parse(body: bytes) -> None:
    pieces = split_records(body, "records")
    assert pieces is not None and len(pieces) > 3
    assert asyncio.run(parse_in_steps(body, "records")) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        # cuts land inside strings holding the separator: a piece fails, the whole is parsed
        json.dumps({"records": _records(4000, "},{")}, separators=(",", ":")).encode(),
        json.dumps({"records": _records(4000, "}, {")}).encode(),
        # another shape, extra keys, a second list, not JSON, numbers orjson refuses
        json.dumps({"records": _records(4000), "x": 1}).encode(),
        json.dumps({"records": _records(2000), "labels": _records(2000)}).encode(),
        json.dumps({"x": 1, "records": _records(4000)}).encode(),
        json.dumps({"records": _records(4000)}).encode().replace(b'"a": 7,', b'"a": NaN,'),
        json.dumps({"records": _records(4000)})
        .encode()
        .replace(b'"a": 7,', b'"a": 1' + b"0" * 30 + b","),
        json.dumps({"records": _records(4000)}).encode()[:-1],
    ],
)
def test_parsing_in_steps_never_changes_the_meaning_of_a_body(body: bytes) -> None:
    """Either the steps give exactly what one parse gives, or None (one parse follows)."""
    got = asyncio.run(parse_in_steps(body, "records"))
    if got is None:
        return
    assert got == jsonio.loads(body)  # the gateway's one parse (orjson)


def test_parsing_in_steps_lets_the_event_loop_run_between_pieces() -> None:
    body = json.dumps({"records": _records(4000)}).encode()
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def main() -> Any:
        task = asyncio.create_task(count())
        await asyncio.sleep(0)
        data = await parse_in_steps(body, "records")
        task.cancel()
        return data

    assert asyncio.run(main()) == json.loads(body)
    assert turns >= len(split_records(body, "records") or ()) > 3


# -- who may call what -------------------------------------------------------------------


def test_metadata_needs_the_key_and_open_paths_do_not() -> None:
    backend = Backend("k3y")
    assert call(backend, "GET", "/metadata").status_code == 401
    ok = call(backend, "GET", "/metadata", headers={"authorization": "Bearer k3y"})
    assert ok.json() == {"model_name": "m"}
    assert call(backend, "GET", "/healthz").status_code == 200
    assert call(backend, "GET", "/readyz").status_code == 200
    assert call(backend, "GET", "/metrics").status_code == 200  # passed on to BentoML
    assert call(backend, "GET", "/static_content/x.js").status_code == 200
    closed = Backend("k3y", open_paths=("/healthz",))
    assert call(closed, "GET", "/metrics").status_code == 401
    assert call(closed, "GET", "/readyz").status_code == 401


def test_without_a_key_only_loopback_clients_get_in_unless_insecure() -> None:
    remote = ("10.0.0.7", 5555)
    keyless = Backend(None)
    refused = call(keyless, "POST", "/predict", client=remote, json=BODY)
    assert refused.status_code == 403 and "DRIFTLOOP_API_KEY" in refused.json()["detail"]
    assert call(keyless, "GET", "/metadata", client=remote).status_code == 403
    assert call(keyless, "GET", "/healthz", client=remote).status_code == 200
    assert call(keyless, "POST", "/predict", client=("::1", 1), json=BODY).status_code == 200
    mapped = ("::ffff:127.0.0.1", 1)
    assert call(keyless, "POST", "/predict", client=mapped, json=BODY).status_code == 200
    insecure = Backend(None, insecure=True)
    assert call(insecure, "POST", "/predict", client=remote, json=BODY).status_code == 200
    keyed = Backend("k3y")
    headers = {"authorization": "Bearer k3y"}
    assert call(keyed, "POST", "/predict", client=remote, json=BODY, headers=headers).is_success


def test_the_short_switch_interval_holds_while_any_large_body_is_in_flight() -> None:
    import sys

    from bentos.gateway import ShortSwitchInterval

    normal = sys.getswitchinterval()
    short = ShortSwitchInterval(short_s=normal / 5)
    try:
        with short:
            assert sys.getswitchinterval() == pytest.approx(normal / 5)
            with short:  # a second large body
                assert sys.getswitchinterval() == pytest.approx(normal / 5)
            assert sys.getswitchinterval() == pytest.approx(normal / 5)  # one still in flight
        assert sys.getswitchinterval() == pytest.approx(normal)
    finally:
        sys.setswitchinterval(normal)
