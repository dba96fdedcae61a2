"""The follower's plain-GET registry read against a small real HTTP server (no MLflow)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bentos.alias_poll import (
    ENDPOINT,
    MlflowHeaders,
    RegistryReadError,
    RestAliasSource,
    alias_source,
    parse_registered_model,
)
from bentos.follower import AliasCache, AliasFollower, CircuitBreaker
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel


class FakeRegistry:
    """Answers ``registered-models/get`` like MLflow's server; counts connections."""

    def __init__(self) -> None:
        self.status = 200
        self.model: dict[str, Any] = {
            "name": "m",
            "aliases": [{"alias": "champion", "version": "3"}],
            "tags": [{"key": "driftloop.canary_share", "value": "0.25"}],
        }
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self.close_after_answer = False
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                registry.connections += 1
                super().setup()

            def do_GET(self) -> None:
                registry.requests.append((self.path, dict(self.headers)))
                if registry.status == 200:
                    body = json.dumps({"registered_model": registry.model}).encode()
                elif registry.status == 404:
                    body = json.dumps(
                        {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"}
                    ).encode()
                else:
                    body = b'{"error_code": "INTERNAL_ERROR", "message": "boom"}'
                self.send_response(registry.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if registry.close_after_answer:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                if registry.close_after_answer:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    yield server
    server.stop()


def test_reads_aliases_and_tags_on_one_kept_alive_connection(registry: FakeRegistry) -> None:
    source = RestAliasSource(registry.url + "/", "my model/x", timeout_s=2)
    for _ in range(3):
        assert source.aliases_and_tags() == (
            {"champion": "3"},
            {"driftloop.canary_share": "0.25"},
        )
    assert registry.connections == 1
    path = registry.requests[0][0]
    assert path == f"{ENDPOINT}?name=my%20model%2Fx"
    source.close()


def test_a_tracking_uri_with_a_path_keeps_it(registry: FakeRegistry) -> None:
    source = RestAliasSource(registry.url + "/mlflow", "m", timeout_s=2)
    source.aliases()
    assert registry.requests[0][0] == f"/mlflow{ENDPOINT}?name=m"


def test_a_connection_the_server_closed_is_reopened(registry: FakeRegistry) -> None:
    registry.close_after_answer = True
    source = RestAliasSource(registry.url, "m", timeout_s=2)
    for _ in range(3):
        assert source.aliases() == {"champion": "3"}
    assert registry.connections == 3


def test_a_model_that_does_not_exist_has_no_aliases(registry: FakeRegistry) -> None:
    registry.status = 404
    assert RestAliasSource(registry.url, "m", timeout_s=2).aliases_and_tags() == ({}, {})


def test_server_errors_and_a_dead_server_raise(registry: FakeRegistry) -> None:
    registry.status = 500
    source = RestAliasSource(registry.url, "m", timeout_s=2)
    with pytest.raises(RegistryReadError, match=r"500.*boom"):
        source.aliases()
    registry.status = 200
    assert source.aliases() == {"champion": "3"}  # the same source recovers
    url = registry.url
    registry.stop()
    with pytest.raises(RegistryReadError):
        RestAliasSource(url, "m", timeout_s=2).aliases()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"not json"),
        (200, b"{}"),
        (200, b'{"registered_model": {"aliases": [{"alias": "champion"}]}}'),
        (404, b"{}"),
        (403, b'{"error_code": "PERMISSION_DENIED", "message": "no"}'),
    ],
)
def test_unexpected_answers_raise(status: int, body: bytes) -> None:
    with pytest.raises(RegistryReadError):
        parse_registered_model(status, body, "m")


def test_a_model_without_aliases_or_tags() -> None:
    body = json.dumps({"registered_model": {"name": "m"}}).encode()
    assert parse_registered_model(200, body, "m") == ({}, {})


def test_sends_the_credentials_mlflow_would_send(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    alias_source(registry.url, "m", 2, fallback=None).aliases()  # type: ignore[arg-type]
    assert registry.requests[-1][1]["Authorization"] == "Bearer tok"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    alias_source(registry.url, "m", 2, fallback=None).aliases()  # type: ignore[arg-type]
    expected = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert registry.requests[-1][1]["Authorization"] == expected


def test_credentials_and_header_plugins_are_resolved_for_every_poll(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from mlflow.tracking.request_header.registry import resolve_request_headers

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "first")
    source = alias_source(registry.url, "m", 2, fallback=None)  # type: ignore[arg-type]
    assert isinstance(source, RestAliasSource) and isinstance(source.headers, MlflowHeaders)

    class ExpiringToken:  # a request-header plugin whose header changes over time
        issued = 0

        def in_context(self) -> bool:
            return True

        def request_headers(self) -> dict[str, str]:
            ExpiringToken.issued += 1
            return {"X-Plugin-Token": f"t{ExpiringToken.issued}"}

    source.headers.plugins.append(ExpiringToken())
    source.aliases()
    sent = registry.requests[-1][1]
    for name, value in resolve_request_headers().items():  # what MLflow itself adds
        assert sent[name] == value
    assert (sent["Authorization"], sent["X-Plugin-Token"]) == ("Bearer first", "t1")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "second")
    source.aliases()
    sent = registry.requests[-1][1]
    assert (sent["Authorization"], sent["X-Plugin-Token"]) == ("Bearer second", "t2")


def test_other_registries_and_auth_schemes_keep_the_mlflow_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fallback = object()
    for uri in ("file:///tmp/mlruns", "sqlite:///x.db", "databricks", "/tmp/mlruns"):
        assert alias_source(uri, "m", 2, fallback) is fallback  # type: ignore[arg-type]
    assert isinstance(alias_source("http://h:5000", "m", 2, fallback), RestAliasSource)  # type: ignore[arg-type]
    monkeypatch.setenv("MLFLOW_TRACKING_AWS_SIGV4", "false")
    assert isinstance(alias_source("http://h:5000", "m", 2, fallback), RestAliasSource)  # type: ignore[arg-type]
    for name, value in (
        ("MLFLOW_TRACKING_AWS_SIGV4", "true"),
        ("MLFLOW_TRACKING_AUTH", "my_plugin"),
        ("MLFLOW_TRACKING_CLIENT_CERT_PATH", "/c.pem"),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            assert alias_source("https://h", "m", 2, fallback) is fallback  # type: ignore[arg-type]


def test_the_follower_keeps_serving_while_the_registry_is_down(
    registry: FakeRegistry, tmp_path: Any
) -> None:
    def loader(version: str, allow_import: bool) -> LoadedModel:
        return LoadedModel(version, f"m:v{version}", object(), RecordSchema(()), LabelSchema())

    follower = AliasFollower(
        model_name="m",
        source=RestAliasSource(registry.url, "m", timeout_s=2),
        loader=loader,
        cache=AliasCache(tmp_path / "aliases.json"),
        poll_interval_s=60,
        breaker=CircuitBreaker(0.0, 0.0),
    )
    follower.poll_once()
    assert follower.snapshot.champion is not None
    assert follower.snapshot.champion.version == "3"
    assert follower.share.value == 0.25
    registry.status = 500
    follower.poll_once()
    assert follower.breaker.is_open
    assert follower.snapshot.champion.version == "3"
    registry.status = 200
    registry.model["aliases"] = [
        {"alias": "champion", "version": "2"},
        {"alias": "previous", "version": "3"},
    ]
    follower.poll_once()
    assert not follower.breaker.is_open
    assert follower.snapshot.champion.version == "2"
