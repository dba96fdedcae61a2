"""The alias follower's registry read as one plain HTTP GET on a kept-alive connection.

Each serving worker reads its model's aliases and tags once a second (`bentos.follower`).
Through ``MlflowClient.get_registered_model`` one read cost ~3.5 ms of GIL-holding CPU
(MLflow's store and entity layers, ``requests``/urllib3, protobuf parsing), taken from
the requests the worker serves at the same time (bench/README.md, "Session 9": ~6-11 %
of the concurrency-1 throughput). The same REST endpoint,
``GET <tracking URI>/api/2.0/mlflow/registered-models/get?name=<model>``, read with
``http.client`` on a connection kept open between polls and parsed with one
``json.loads``, is ~0.5 ms.

`RestAliasSource` does that for an ``http(s)://`` tracking server with the credentials
MLflow itself would send (``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or
``~/.mlflow/credentials`` → Basic, ``MLFLOW_TRACKING_TOKEN`` → Bearer, the request-header
plugins' headers, ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``),
resolved for every request as MLflow does (`MlflowHeaders`), so a plugin's expiring
token or a rewritten credentials file is picked up; only MLflow's two built-in header
providers, fixed for a process, are resolved once (0.7 ms a call).
Where MLflow would authenticate otherwise (an auth plugin ``MLFLOW_TRACKING_AUTH``, AWS
SigV4, a client certificate) or the registry is not an HTTP server (``databricks``, a
file or database URI), `alias_source` returns the MLflow client's source unchanged.

Answers mean what ``Registry.aliases_and_tags`` returns: a model that does not exist
(``RESOURCE_DOES_NOT_EXIST``) has no aliases; any other failure (connection refused,
timeout, a non-200 answer, a body that is not the expected JSON) raises
`RegistryReadError`, which the follower's circuit breaker handles as before.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

ENDPOINT = "/api/2.0/mlflow/registered-models/get"
# MLflow's ways to authenticate that a plain GET with fixed headers cannot reproduce.
_NEEDS_MLFLOW_CLIENT = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_CLIENT_CERT_PATH")
_NEEDS_MLFLOW_CLIENT_FLAGS = ("MLFLOW_TRACKING_AWS_SIGV4",)


class RegistryReadError(RuntimeError):
    """The registry did not answer the alias read usefully (the message says how)."""


class AliasesAndTags(Protocol):
    def aliases(self) -> dict[str, str]: ...

    def aliases_and_tags(self) -> tuple[dict[str, str], dict[str, str]]: ...


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class RestAliasSource:
    """(aliases, tags) of `model_name` by one GET per call on a kept-alive connection."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        timeout_s: float,
        headers: Callable[[], dict[str, str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`headers`: called before every request (credentials that may change)."""
        parts = urlsplit(tracking_uri)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) tracking URI: {tracking_uri!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.path = f"{parts.path.rstrip('/')}{ENDPOINT}?name={quote(model_name, safe='')}"
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.headers = headers
        self.ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def aliases(self) -> dict[str, str]:
        return self.aliases_and_tags()[0]

    def aliases_and_tags(self) -> tuple[dict[str, str], dict[str, str]]:
        with self._lock:
            status, body = self._get()
        return parse_registered_model(status, body, self.model_name)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- transport ---------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout_s, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _get(self) -> tuple[int, bytes]:
        """One GET; a kept-alive connection the server closed meanwhile is reopened once."""
        reused = self._conn is not None
        try:
            return self._exchange()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            if not reused or isinstance(exc, TimeoutError):
                raise RegistryReadError(f"{type(exc).__name__}: {exc}") from exc
        try:  # the server may close an idle kept-alive connection between two polls
            return self._exchange()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise RegistryReadError(f"{type(exc).__name__}: {exc}") from exc

    def _exchange(self) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = self._connect()
        extra = self.headers() if self.headers is not None else {}
        self._conn.request("GET", self.path, headers={"Accept": "application/json", **extra})
        response = self._conn.getresponse()
        body = response.read()
        if response.will_close:
            self._drop()
        return response.status, body


def parse_registered_model(
    status: int, body: bytes, model_name: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(alias -> version, tag -> value) from the endpoint's answer; ({}, {}) when the model
    does not exist; `RegistryReadError` for anything else."""
    try:
        data: Any = json.loads(body) if body else {}
    except ValueError:
        data = None
    missing = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
    if status == 404 and isinstance(data, dict) and data.get("error_code") in missing:
        return {}, {}
    if status != 200 or not isinstance(data, dict):
        detail = (
            data.get("message") if isinstance(data, dict) else body[:200].decode(errors="replace")
        )
        raise RegistryReadError(
            f"registry answered {status} to reading model {model_name!r}: {detail}"
        )
    model = data.get("registered_model")
    if not isinstance(model, dict):
        raise RegistryReadError(f"registry answer without registered_model for {model_name!r}")
    try:
        aliases = {str(a["alias"]): str(a["version"]) for a in model.get("aliases") or []}
        tags = {str(t["key"]): str(t.get("value", "")) for t in model.get("tags") or []}
    except (KeyError, TypeError) as exc:
        raise RegistryReadError(f"unexpected registry answer for {model_name!r}: {exc}") from exc
    return aliases, tags


class MlflowHeaders:
    """What MLflow's REST client adds to a request, resolved per call as MLflow does:
    the request-header providers' headers (MLflow's built-in ones, then plugins'), then
    the Basic (username + password, env or ``~/.mlflow/credentials``) or Bearer
    credentials. MLflow's two built-in providers (client version, Databricks notebook
    context) cannot change within a process and cost ~0.7 ms a call: resolved once."""

    def __init__(self) -> None:
        from mlflow.tracking.request_header.databricks_request_header_provider import (
            DatabricksRequestHeaderProvider,
        )
        from mlflow.tracking.request_header.default_request_header_provider import (
            DefaultRequestHeaderProvider,
        )

        self.fixed: dict[str, str] = {}
        for built_in in (DatabricksRequestHeaderProvider(), DefaultRequestHeaderProvider()):
            if built_in.in_context():
                self.fixed.update(_text(built_in.request_headers()))
        self.plugins: list[Any] = []
        # What `mlflow.tracking.request_header.registry` registers from entry points.
        for entry in entry_points(group="mlflow.request_header_provider"):
            try:
                self.plugins.append(entry.load()())
            except Exception:  # MLflow warns and goes on without it, as do we
                continue

    def __call__(self) -> dict[str, str]:
        from mlflow.utils.credentials import read_mlflow_creds

        headers = dict(self.fixed)
        for plugin in self.plugins:
            if plugin.in_context():
                headers.update(_text(plugin.request_headers()))
        creds = read_mlflow_creds()
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if creds.username and creds.password:
            raw = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


def _text(headers: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in headers.items()}


def _ssl_context() -> ssl.SSLContext:
    if _truthy(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS")):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))


def alias_source(
    tracking_uri: str, model_name: str, timeout_s: float, fallback: AliasesAndTags
) -> AliasesAndTags:
    """The plain-GET source for an http(s) registry MLflow would reach with fixed
    headers; otherwise `fallback` (the MLflow client's ``Registry``)."""
    scheme = urlsplit(tracking_uri).scheme
    if scheme not in {"http", "https"}:
        return fallback
    if any(os.environ.get(name) for name in _NEEDS_MLFLOW_CLIENT) or any(
        _truthy(os.environ.get(name)) for name in _NEEDS_MLFLOW_CLIENT_FLAGS
    ):
        return fallback
    return RestAliasSource(
        tracking_uri,
        model_name,
        timeout_s,
        headers=MlflowHeaders(),
        ssl_context=_ssl_context() if scheme == "https" else None,
    )
