"""The HTTP front door: authentication, body limits, JSON only, and the GET endpoints.

An ASGI middleware in front of BentoML's routes, because BentoML's own
``/healthz`` and ``/readyz`` routes come first and cannot say "degraded", its
APIs are POST only (``/metadata`` is a GET), and body checks must happen before
BentoML reads a body:

- With an API key, every path but ``open_paths`` (health, readiness, metrics and
  the docs by default) needs ``Authorization: Bearer <key>`` (constant-time
  compare; 401) -- ``/predict`` and ``/metadata`` included. ``/feedback`` has its
  own scope (`feedback_scope`: the feedback key; another known key gets 403).
  Without any key and without ``insecure``, only loopback clients reach those paths
  (403).
- Any POST: a JSON content type in UTF-8 only (415, so
  ``application/vnd.bentoml+pickle`` never reaches a model); BentoML is then told
  plain ``application/json`` whatever variant came in.
- ``/predict`` and ``/feedback`` bodies: at most ``max_body_bytes`` (413), strict
  JSON (400: no NaN/Infinity, no lone surrogates, numbers that fit 64 bits, at most
  ``MAX_JSON_DEPTH`` levels), a JSON object with the expected non-empty list of
  objects of at most ``max_records`` entries (422), all in the same
  ``{"detail": [...]}`` shape as field errors. Bodies over ``INLINE_PARSE_BYTES``
  are parsed ``PARSE_STEP_BYTES`` at a time, one piece per event-loop turn
  (`parse_in_steps`; other shapes in a worker thread), so health probes keep being
  answered, and while
  any such body (or one of more than ``LARGE_BODY_RECORDS`` records) is in flight the
  GIL switch interval is short
  (`LARGE_BODY_SWITCH_INTERVAL_S`): the event loop then waits ~1 ms, not 5, each
  time it needs the GIL back from the threads that parse, validate, predict and log
  that body. Small-body traffic keeps CPython's default, which it is faster with.
- ``GET /healthz`` (alive), ``/readyz`` (a model is loaded; degraded when the
  registry is unreachable), ``/metadata``.
- ``POST /predict`` and ``/feedback`` with a checked body: answered here by the
  backend's handler (`GatewayConfig.handlers`: ``ServingApp.predict`` / ``feedback``
  on the parsed list), not by BentoML's routing and API layer (Starlette routing,
  its request context, the API's own parse and response wrapping; bench/README.md,
  "Session 8"). BentoML's request metrics
  (``bentoml_service_request_*`` by endpoint and status), tracing and timeout are
  middlewares *outside* this one, so they still see every request; the APIs stay
  declared on the service for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import math
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.serving import DEFAULT_OPEN_PATHS, SERVICE_NAME
from predlog import jsonio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json",)
UTF8 = ("utf-8", "utf8")
GET_ENDPOINTS = {"/healthz": "healthz", "/readyz": "readyz", "/metadata": "metadata"}
DOCS_PATH = "/docs.json"  # BentoML's OpenAPI document, completed live (bentos/openapi.py)
logger = logging.getLogger("driftloop.serving")
MAX_JSON_DEPTH = 32  # records are flat; BentoML's own parser gives up near 200 levels
MAX_LISTED_ERRORS = 20  # a 422/400 body lists at most this many problems
INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed in steps (or a worker thread)
PARSE_STEP_BYTES = 32 * 1024  # a large body is parsed this much per event-loop turn
LARGE_BODY_SWITCH_INTERVAL_S = 0.001  # while a larger body is in flight (default 0.005)
LARGE_BODY_RECORDS = 256  # a body of more records is large too (the API validates it in a thread)
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

# The list the gateway parsed from the current request's body, for the API function.
_PARSED: ContextVar[list[Any] | None] = ContextVar("driftloop_parsed_list", default=None)


def parsed_list() -> list[Any] | None:
    """The body's list as the gateway parsed and checked it (None: no gateway in front).

    BentoML is handed an empty list instead of the body: its own parse (pydantic, on
    the event loop, ~50 ms for a 1 MB body) would otherwise run a second time.
    """
    return _PARSED.get()


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
    max_records: int = 10_000  # most entries of the body's list (422 above)
    open_paths: tuple[str, ...] = DEFAULT_OPEN_PATHS  # answered without the key
    insecure: bool = False  # without a key: serve non-loopback clients too
    # path -> the list field its JSON body must carry
    bodies: dict[str, str] = field(
        default_factory=lambda: {"/predict": "records", "/feedback": "labels"}
    )
    # path -> its own key scope (paths not listed: `api_key` when set)
    scopes: dict[str, KeyScope | None] = field(default_factory=dict)
    # path -> the backend's async method answering its checked list (`Answer`): such a
    # path is answered here, without BentoML's routing and API layer (paths not listed,
    # or a backend without the method, go to BentoML's API with the list in `parsed_list`)
    handlers: dict[str, str] = field(default_factory=dict)

    def is_open(self, path: str) -> bool:
        """Whether `path` is answered without the API key (exact, or a `prefix/*` entry)."""
        return any(
            path == entry or (entry.endswith("/*") and path.startswith(entry[:-1]))
            for entry in self.open_paths
        )


class Answer(Protocol):
    """What a handler returns: a Starlette `Response` fits (status, raw headers, body)."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes


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
    """`application/json` (any case, any parameters) or an `application/*+json` type."""
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def content_type_problem(content_type: str | None) -> str | None:
    """Why a POST body's content type is refused (415), or None for UTF-8 JSON."""
    if not is_json_type(content_type):
        return (
            f"unsupported content type {content_type or '(none)'}: "
            "send JSON with 'Content-Type: application/json'"
        )
    assert content_type is not None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8:
            return (
                f"unsupported charset {value.strip()!r} in content type {content_type!r}: "
                "send UTF-8 JSON ('Content-Type: application/json')"
            )
    return None


def is_loopback(client: tuple[str, int] | list[Any] | None) -> bool:
    """Whether the ASGI `client` address is this machine (None: not a TCP client)."""
    if not client:
        return True  # in-process transports (tests) and unix sockets
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on dual-stack sockets
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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


def _problem(loc: list[Any], msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "input": value, "type": kind}


def parse_json(body: bytes) -> tuple[Any, list[dict[str, Any]] | None]:
    """(data, None), or (None, problems) for a body that is not strict JSON.

    Strict: what orjson accepts (RFC 8259, UTF-8, numbers that fit 64 bits or a
    double, at most 1024 levels). When orjson refuses, the body is refused too;
    Python's json module then only helps to name where the problem is (a NaN, an
    infinite or huge number, a lone surrogate).
    """
    try:
        return jsonio.loads(body), None
    except ValueError as exc:
        return None, [_explain_invalid(body, exc)]


def _explain_invalid(body: bytes, exc: ValueError) -> dict[str, Any]:
    """The 400 problem of a body orjson refused, naming the value's path when it can."""
    try:
        data = json.loads(body)
    except RecursionError:
        return _problem(
            ["body"], f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels", "json_depth"
        )
    except (ValueError, UnicodeDecodeError):
        return _problem(["body"], f"invalid JSON: {exc}", "json_invalid")
    found = _first_unrepresentable(data)
    if found is None:  # json takes what orjson refuses (e.g. a byte-order mark)
        return _problem(["body"], f"invalid JSON: {exc}", "json_invalid")
    path, msg = found
    return _problem(["body", *path], f"invalid JSON: {msg}", "json_invalid")


def _first_unrepresentable(data: Any) -> tuple[list[Any], str] | None:
    """Path and reason of the first NaN/Infinity, out-of-range number or lone surrogate."""
    stack: list[tuple[list[Any], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, (
                f"{value} is not a JSON number (NaN/Infinity, or beyond the double range): "
                "send a finite number or null"
            )
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64_MIN <= value <= _UINT64_MAX:
                digits = len(str(abs(value)))
                return path, (
                    f"an integer of {digits} digits does not fit 64 bits: send a number "
                    "between -2**63 and 2**64-1, or a float"
                )
        elif isinstance(value, str):
            if _has_surrogate(value):
                return path, "lone UTF-16 surrogate in a string: strings must be valid Unicode"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    shown = key.encode("utf-8", "backslashreplace").decode()
                    return [*path, shown], "lone UTF-16 surrogate in a key"
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, i], item) for i, item in enumerate(value))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def depth_beyond(data: Any, body: bytes, records: int) -> tuple[list[Any], int] | None:
    """Path and level of a container nested deeper than MAX_JSON_DEPTH, else None.

    `data` is an envelope of `records` objects. A flat one (scalar feature values)
    has exactly `records + 2` brackets, which counting vouches for in microseconds
    (brackets inside strings only make the count larger); others are walked.
    """
    if body.count(b"[") + body.count(b"{") <= records + 2:
        return None
    stack: list[tuple[list[Any], Any, int]] = [([], data, 1)]
    while stack:
        path, value, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            return path, level
        if isinstance(value, dict):
            stack.extend(
                ([*path, k], v, level + 1) for k, v in value.items() if isinstance(v, dict | list)
            )
        elif isinstance(value, list):
            stack.extend(
                ([*path, i], v, level + 1)
                for i, v in enumerate(value)
                if isinstance(v, dict | list)
            )
    return None


def check_envelope(
    body: bytes, list_field: str, max_items: int = 10_000
) -> list[dict[str, Any]] | None:
    """Problems with the body (strict JSON; `{"<list_field>": [ {...}, ... ]}`), or None."""
    return read_envelope(body, list_field, max_items)[1]


def read_envelope(
    body: bytes, list_field: str, max_items: int = 10_000
) -> tuple[list[Any] | None, list[dict[str, Any]] | None]:
    """(the body's list, None) or (None, problems); see `check_envelope`."""
    data, problems = parse_json(body)
    if problems:
        return None, problems
    return envelope_items(data, body, list_field, max_items)


def envelope_items(
    data: Any, body: bytes, list_field: str, max_items: int = 10_000
) -> tuple[list[Any] | None, list[dict[str, Any]] | None]:
    """`read_envelope` after the parse: `data` is the JSON value of `body`."""
    shape = f'{{"{list_field}": [{{...}}, ...]}}'
    if not isinstance(data, dict):
        return None, [
            _problem(
                ["body"],
                f"expected a JSON object like {shape}, got {type(data).__name__}",
                "dict_type",
            )
        ]
    errors: list[dict[str, Any]] = [
        _problem(["body", key], f"unknown field {key!r}; the body is {shape}", "extra_forbidden")
        for key in data
        if key != list_field
    ][:MAX_LISTED_ERRORS]
    items = data.get(list_field)
    errors += _list_problems(data, list_field, shape, max_items, len(errors))
    if not errors and (deep := depth_beyond(data, body, len(items))) is not None:
        path, level = deep
        errors.append(
            _problem(
                path,
                f"JSON nested deeper than {MAX_JSON_DEPTH} levels (level {level} here): "
                "records are flat objects of feature values",
                "json_depth",
            )
        )
    return (None, errors) if errors else (items, None)


def _list_problems(
    data: dict[str, Any], list_field: str, shape: str, max_items: int, already: int
) -> list[dict[str, Any]]:
    """What is wrong with the body's list (missing, not a non-empty list, too long, items
    that are not objects), listing at most MAX_LISTED_ERRORS with the `already` found."""
    items = data.get(list_field)
    problems: list[dict[str, Any]] = []
    if list_field not in data:
        problems.append(
            _problem([list_field], f"missing field {list_field!r}: the body is {shape}", "missing")
        )
    elif not isinstance(items, list) or not items:
        problems.append(
            _problem(
                [list_field],
                f"expected a non-empty list of objects, got {json.dumps(items)[:60]}",
                "list_type" if not isinstance(items, list) else "too_short",
                items if not isinstance(items, dict | list) else None,
            )
        )
    elif len(items) > max_items:
        problems.append(
            _problem(
                [list_field],
                f"too many {list_field}: {len(items)} in one request, at most {max_items} "
                "(setting max_records_per_request, DRIFTLOOP_MAX_RECORDS_PER_REQUEST): "
                "split the request",
                "too_long",
            )
        )
    else:
        bad = (i for i, item in enumerate(items) if type(item) is not dict)
        for i in bad:
            if already + len(problems) >= MAX_LISTED_ERRORS:
                break
            problems.append(
                _problem(
                    [list_field, i],
                    f"expected an object, got {json.dumps(items[i])[:60]}",
                    "dict_type",
                    items[i] if not isinstance(items[i], dict | list) else None,
                )
            )
    return problems


@functools.cache  # one pair per list field (records, labels), not one per large body
def _envelope_pattern(list_field: str) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    head = re.compile(
        rb'\A[ \t\r\n]*\{[ \t\r\n]*"'
        + re.escape(list_field.encode())
        + rb'"[ \t\r\n]*:[ \t\r\n]*\['
    )
    return head, re.compile(rb"\][ \t\r\n]*\}[ \t\r\n]*\Z")


_BETWEEN_RECORDS = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")


def split_records(
    body: bytes, list_field: str, step_bytes: int = PARSE_STEP_BYTES
) -> list[bytes] | None:
    """`body` = `{"<list_field>": [ ... ]}` cut between records into JSON arrays of about
    `step_bytes` each, or None when it does not have exactly that shape.

    A cut that falls inside a string (one holding ``},{``) leaves that piece an
    unterminated string, so its parse fails and the caller parses the whole body:
    pieces that all parse are always the body's own records.
    """
    head, tail = _envelope_pattern(list_field)
    start_match = head.match(body)
    end_match = tail.search(body)
    if start_match is None or end_match is None or end_match.start() < start_match.end():
        return None
    start, end = start_match.end(), end_match.start()
    pieces: list[bytes] = []
    while end - start > step_bytes:
        cut = _BETWEEN_RECORDS.search(body, start + step_bytes, end)
        if cut is None:
            break
        pieces.append(b"[" + body[start : cut.start() + 1] + b"]")
        start = cut.end() - 1  # the next record's "{"
    pieces.append(b"[" + body[start:end] + b"]")
    return pieces


async def parse_in_steps(body: bytes, list_field: str) -> Any:
    """The JSON value of a large envelope body, parsed one piece of ~`PARSE_STEP_BYTES`
    per event-loop turn (None: not that shape, or a piece did not parse; then parse the
    whole body, which also names the problem).

    One `orjson.loads` of a 1 MB body holds the GIL for 5-25 ms in one C call, and a
    worker thread doing it stalls the event loop (health probes) just the same; pieces
    bound each stall to well under a millisecond or two.
    """
    pieces = split_records(body, list_field)
    if pieces is None or len(pieces) < 2:
        return None
    items: list[Any] = []
    for piece in pieces:
        try:
            part = jsonio.loads(piece)
        except ValueError:
            return None
        items += part
        await asyncio.sleep(0)  # let the loop answer what came in meanwhile
    return {list_field: items}


class ShortSwitchInterval:
    """Context manager: the GIL switch interval is `short_s` while at least one holder is
    inside, the process's own value otherwise.

    Entered and left on the event loop's thread only (no lock needed). A process-wide
    setting, so it is scoped to large bodies: measured with small bodies at
    concurrency 8, a 1 ms interval all the time cost throughput.
    """

    def __init__(self, short_s: float = LARGE_BODY_SWITCH_INTERVAL_S) -> None:
        self.short_s = short_s
        self.holders = 0
        self._normal_s = sys.getswitchinterval()

    def __enter__(self) -> None:
        if self.holders == 0:
            self._normal_s = sys.getswitchinterval()
            sys.setswitchinterval(min(self.short_s, self._normal_s))
        self.holders += 1

    def __exit__(self, *exc: object) -> None:
        self.holders -= 1
        if self.holders == 0:
            sys.setswitchinterval(self._normal_s)


class Gateway:
    """ASGI middleware; `backend()` returns the live service (None while it starts)."""

    def __init__(
        self,
        app: ASGIApp,
        backend: Callable[[], GatewayBackend | None],
        answers: bool | None = None,
    ) -> None:
        self.app = app
        self.backend = backend
        self.large_bodies = ShortSwitchInterval()
        # Whether the backend's handlers answer their paths here; not when BentoML's CORS
        # middleware (inside this one) must add its headers to those answers.
        self.answers = not _bentoml_cors_enabled() if answers is None else answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        backend = self.backend()
        config = backend.gateway_config if backend is not None else None
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if config is not None and not config.is_open(path):
            refused = _refusal(config, path, headers, scope.get("client"))
            if refused is not None:
                await send_json(send, *refused)
                return
        if method == "GET" and path in GET_ENDPOINTS:
            await self._get(backend, path, send)
            return
        if method == "GET" and path == DOCS_PATH and backend is not None:
            await self._docs(backend, scope, receive, send)
            return
        if method != "POST":
            await self.app(scope, receive, send)
            return
        if config is None:
            await send_json(send, 503, {"detail": "the service is starting; retry shortly"})
            return
        content_type = _header(headers, b"content-type")
        if (problem := content_type_problem(content_type)) is not None:
            await send_json(send, 415, {"detail": problem})
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
        list_field = config.bodies.get(path)
        if list_field is None:
            await self.app(_as_json(scope, headers, len(body)), _replay(body, receive), send)
            return
        if len(body) <= INLINE_PARSE_BYTES:
            items, problems = read_envelope(body, list_field, config.max_records)
            if items is None or len(items) <= LARGE_BODY_RECORDS:
                await self._answer(
                    backend, scope, headers, receive, send, list_field, items, problems
                )
                return
            with self.large_bodies:  # few bytes, many records: validated in a thread
                await self._answer(
                    backend, scope, headers, receive, send, list_field, items, problems
                )
            return
        with self.large_bodies:  # keep the event loop answering (health probes) meanwhile
            data = await parse_in_steps(body, list_field)
            if data is None:  # another shape, or not JSON: the whole body in a thread
                items, problems = await asyncio.to_thread(
                    read_envelope, body, list_field, config.max_records
                )
            else:
                items, problems = envelope_items(data, body, list_field, config.max_records)
            await self._answer(backend, scope, headers, receive, send, list_field, items, problems)

    async def _answer(
        self,
        backend: GatewayBackend,
        scope: Scope,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        list_field: str,
        items: list[Any] | None,
        problems: list[dict[str, Any]] | None,
    ) -> None:
        """The 400/422 of a refused body, the backend's handler's answer for the checked
        list, or (no handler) BentoML's API called with it."""
        if problems:
            status = 400 if problems[0]["type"] in _BAD_JSON else 422
            await send_json(send, status, {"detail": problems})
            return
        name = backend.gateway_config.handlers.get(scope["path"]) if self.answers else None
        handler = getattr(backend, name, None) if name is not None else None
        if handler is not None:
            try:
                answer = await handler(items or [])
            except Exception as exc:  # a logged 500, as BentoML's API layer answered
                logger.exception("%s failed", scope["path"])
                detail = f"the service failed on this request ({type(exc).__name__}); see its log"
                await send_json(send, 500, {"detail": detail}, {"server": _SERVER_NAME})
                return
            await _send_answer(send, answer)
            return
        stub = _STUBS.get(list_field) or f'{{"{list_field}":[]}}'.encode()
        token = _PARSED.set(items)
        try:
            await self.app(_as_json(scope, headers, len(stub)), _replay(stub, receive), send)
        finally:
            _PARSED.reset(token)

    async def _docs(
        self, backend: GatewayBackend, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """BentoML's OpenAPI document completed with the live champion (bentos/openapi.py):
        title, version, features, a working example, the gateway's endpoints."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        body = b"".join(chunks)
        details = getattr(backend, "docs_details", None)
        if start.get("status") == 200 and details is not None:
            from bentos.openapi import document

            try:
                await send_json(send, 200, document(json.loads(body), details()))
                return
            except Exception:
                logger.exception("could not complete the OpenAPI document")
        await send(start or {"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def _get(self, backend: GatewayBackend | None, path: str, send: Send) -> None:
        if backend is None:
            status, body = (
                (200, {"status": "alive"}) if path == "/healthz" else (503, {"status": "starting"})
            )
        else:
            status, body = getattr(backend, GET_ENDPOINTS[path])()
        await send_json(send, status, body)


def _bentoml_cors_enabled() -> bool:
    """Whether BentoML's CORS middleware is on (`http.cors.enabled`; False outside BentoML)."""
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return bool(BentoMLContainer.http.cors.enabled.get())
    except Exception:
        return False


async def _send_answer(send: Send, answer: Answer) -> None:
    """Send a handler's answer as is (its headers name type and length), plus the
    `server` header BentoML's API layer adds to its answers."""
    headers = [*answer.raw_headers, (b"server", _SERVER_NAME.encode())]
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


_SERVER_NAME = f"BentoML Service/{SERVICE_NAME}"
_BAD_JSON = ("json_invalid", "json_depth")
_STUBS = {"records": b'{"records":[]}', "labels": b'{"labels":[]}'}


def _as_json(scope: Scope, headers: list[tuple[bytes, bytes]], length: int) -> Scope:
    """`scope` with `Content-Type: application/json` (BentoML picks its parser by the exact
    type) and the Content-Length of the body handed on."""
    fixed = [
        (name, value)
        for name, value in headers
        if name.lower() not in (b"content-type", b"content-length")
    ]
    fixed += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": fixed}


def _refusal(
    config: GatewayConfig, path: str, headers: list[tuple[bytes, bytes]], client: Any
) -> tuple[int, dict[str, Any], dict[str, str] | None] | None:
    """(status, body, headers) refusing a request to a path that is not open, or None.

    A path with a scope of its own (labels) is decided by that scope's keys; a scope of
    None there means no key applies (the keyless mode, loopback only).
    """
    if path in config.scopes and (key_scope := config.scopes[path]) is not None:
        refused = key_scope.check(bearer_token(headers))
        if refused is None:
            return None
        status, detail = refused
        return status, {"detail": detail}, {"www-authenticate": "Bearer"} if status == 401 else None
    if path not in config.scopes and config.api_key is not None:
        if keys_match(bearer_token(headers), config.api_key):
            return None
        detail = "missing or wrong API key: send 'Authorization: Bearer <key>'"
        return 401, {"detail": detail}, {"www-authenticate": "Bearer"}
    if config.insecure or is_loopback(client):
        return None
    detail = (
        "this service has no API key, so it answers loopback clients only: set "
        "DRIFTLOOP_API_KEY (clients send 'Authorization: Bearer <key>'), or serve "
        "with --insecure (DRIFTLOOP_INSECURE=true) to open it to the network"
    )
    return 403, {"detail": detail}, None


def _too_large(limit: int) -> dict[str, str]:
    return {
        "detail": f"request body larger than {limit} bytes (setting max_body_bytes, "
        "DRIFTLOOP_MAX_BODY_BYTES): send fewer records per request"
    }


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
