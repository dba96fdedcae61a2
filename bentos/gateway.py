"""The HTTP front door: authentication, body limits, JSON only, and the GET endpoints.

An ASGI middleware in front of BentoML's routes, because BentoML's own
``/healthz`` and ``/readyz`` routes come first and cannot say "degraded", its
APIs are POST only (``/metadata`` is a GET), and body checks must happen before
BentoML reads a body:

- ``POST /predict``: ``Authorization: Bearer <key>`` when a key is configured
  (constant-time compare; 401); ``POST /feedback``: its own scope (`feedback_scope`:
  the feedback key; another known key gets 403), any POST: JSON content type only
  (415, so ``application/vnd.bentoml+pickle`` never reaches a model), body at most
  ``max_body_bytes`` (413), body must be a JSON object with the expected list
  (400 / 422 in the same ``{"detail": [...]}`` shape as field errors).
- ``GET /healthz`` (alive), ``/readyz`` (a model is loaded; degraded when the
  registry is unreachable), ``/metadata``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bentos import jsonio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json",)
GET_ENDPOINTS = {"/healthz": "healthz", "/readyz": "readyz", "/metadata": "metadata"}


@dataclass(frozen=True)
class KeyScope:
    """Which keys may POST one path (a scope of its own, e.g. labels).

    A key of `accepts` passes; a key of `refuses` (known to the service, another scope)
    gets 403 `forbidden`; anything else 401. `closed`: everyone gets 403 `forbidden`
    (keys protect the service but none was given this scope).
    """

    accepts: tuple[str, ...] = ()
    refuses: tuple[str, ...] = ()
    forbidden: str = "this key cannot call this endpoint"
    unauthorized: str = "missing or wrong API key: send 'Authorization: Bearer <key>'"
    closed: bool = False
    who: str = "the API key"  # who may call, in words (for /metadata)

    def check(self, token: str | None) -> tuple[int, str] | None:
        """None when `token` may call the path, else (status, detail)."""
        if self.closed:
            return 403, self.forbidden
        if any(keys_match(token, key) for key in self.accepts):
            return None
        if any(keys_match(token, key) for key in self.refuses):
            return 403, self.forbidden
        return 401, self.unauthorized


def feedback_scope(
    api_key: str | None, feedback_key: str | None, with_api_key: bool = False
) -> KeyScope | None:
    """Who may post labels (None: anyone, the keyless loopback mode).

    Labels decide promotion and rollback, so the key that predicts does not post them
    unless asked to (`with_api_key`); a dedicated feedback key is the only one it takes.
    """
    if feedback_key:
        return KeyScope(
            accepts=(feedback_key,),
            refuses=(api_key,) if api_key else (),
            forbidden="this key cannot post labels: /feedback takes the feedback key "
            "(DRIFTLOOP_FEEDBACK_API_KEY) only",
            unauthorized="missing or wrong feedback key: send "
            "'Authorization: Bearer <feedback key>'",
            who="the feedback key (DRIFTLOOP_FEEDBACK_API_KEY)",
        )
    if not api_key:
        return None
    if with_api_key:
        return KeyScope(accepts=(api_key,), who="the API key (DRIFTLOOP_FEEDBACK_WITH_API_KEY)")
    return KeyScope(
        closed=True,
        who="nobody: set DRIFTLOOP_FEEDBACK_API_KEY",
        forbidden="labels are refused: DRIFTLOOP_API_KEY protects this service but no "
        "key may post labels; set DRIFTLOOP_FEEDBACK_API_KEY (or "
        "DRIFTLOOP_FEEDBACK_WITH_API_KEY=true to let the API key post them)",
    )


@dataclass(frozen=True)
class GatewayConfig:
    api_key: str | None
    max_body_bytes: int
    # path -> the list field its JSON body must carry
    bodies: dict[str, str] = field(
        default_factory=lambda: {"/predict": "records", "/feedback": "labels"}
    )
    # path -> its own key scope (paths not listed: `api_key` when set)
    scopes: dict[str, KeyScope | None] = field(default_factory=dict)


class GatewayBackend(Protocol):
    gateway_config: GatewayConfig

    def healthz(self) -> tuple[int, dict[str, Any]]: ...
    def readyz(self) -> tuple[int, dict[str, Any]]: ...
    def metadata(self) -> tuple[int, dict[str, Any]]: ...


def keys_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of an API key (no early exit on the first difference)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


def is_json_type(content_type: str | None) -> bool:
    """`application/json` (any parameters) or a `+json` structured type."""
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    payload = jsonio.dumps(body)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (BodyTooLarge) as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def check_envelope(body: bytes, list_field: str) -> list[dict[str, Any]] | None:
    """Problems with the body's outer shape (`{"<list_field>": [ {...}, ... ]}`), or None."""
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError):
        try:  # orjson refuses NaN and huge integers, which json (and BentoML) take
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return [
                {
                    "loc": ["body"],
                    "msg": f"invalid JSON: {exc}",
                    "input": None,
                    "type": "json_invalid",
                }
            ]
    shape = f'{{"{list_field}": [{{...}}, ...]}}'
    if not isinstance(data, dict):
        return [
            {
                "loc": ["body"],
                "msg": f"expected a JSON object like {shape}, got {type(data).__name__}",
                "input": None,
                "type": "dict_type",
            }
        ]
    errors: list[dict[str, Any]] = [
        {
            "loc": ["body", key],
            "msg": f"unknown field {key!r}; the body is {shape}",
            "input": None,
            "type": "extra_forbidden",
        }
        for key in data
        if key != list_field
    ]
    items = data.get(list_field)
    if list_field not in data:
        errors.append(
            {
                "loc": [list_field],
                "msg": f"missing field {list_field!r}: the body is {shape}",
                "input": None,
                "type": "missing",
            }
        )
    elif not isinstance(items, list) or not items:
        errors.append(
            {
                "loc": [list_field],
                "msg": f"expected a non-empty list of objects, got {json.dumps(items)[:60]}",
                "input": items if not isinstance(items, dict | list) else None,
                "type": "list_type",
            }
        )
    else:
        errors += [
            {
                "loc": [list_field, i],
                "msg": f"expected an object, got {json.dumps(item)[:60]}",
                "input": item,
                "type": "dict_type",
            }
            for i, item in enumerate(items)
            if not isinstance(item, dict)
        ][:50]
    return errors or None


class Gateway:
    """ASGI middleware; `backend()` returns the live service (None while it starts)."""

    def __init__(self, app: ASGIApp, backend: Callable[[], GatewayBackend | None]) -> None:
        self.app = app
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path in GET_ENDPOINTS:
            await self._get(path, send)
            return
        if method != "POST":
            await self.app(scope, receive, send)
            return
        backend = self.backend()
        if backend is None:
            await send_json(send, 503, {"detail": "the service is starting; retry shortly"})
            return
        config = backend.gateway_config
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        list_field = config.bodies.get(path)
        key = config.api_key if list_field is not None else None
        if path in config.scopes:
            key_scope = config.scopes[path]
            token = bearer_token(headers)
            refused = key_scope.check(token) if key_scope is not None else None
            if refused is not None:
                status, detail = refused
                extra = {"www-authenticate": "Bearer"} if status == 401 else None
                await send_json(send, status, {"detail": detail}, extra)
                return
        elif key is not None and not keys_match(bearer_token(headers), key):
            await send_json(
                send,
                401,
                {"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                {"www-authenticate": "Bearer"},
            )
            return
        content_type = _header(headers, b"content-type")
        if not is_json_type(content_type):
            await send_json(
                send,
                415,
                {
                    "detail": f"unsupported content type {content_type or '(none)'}: "
                    "send JSON with 'Content-Type: application/json'"
                },
            )
            return
        limit = config.max_body_bytes
        declared = _header(headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, _too_large(limit))
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            await send_json(send, 413, _too_large(limit))
            return
        if list_field is not None and (problems := check_envelope(body, list_field)):
            status = 400 if problems[0]["type"] == "json_invalid" else 422
            await send_json(send, status, {"detail": problems})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _get(self, path: str, send: Send) -> None:
        backend = self.backend()
        if backend is None:
            status, body = (
                (200, {"status": "alive"}) if path == "/healthz" else (503, {"status": "starting"})
            )
        else:
            status, body = getattr(backend, GET_ENDPOINTS[path])()
        await send_json(send, status, body)


def _too_large(limit: int) -> dict[str, str]:
    return {"detail": f"request body larger than {limit} bytes: send fewer records per request"}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
