"""Each serving worker yields the CPU after accepting a connection (bentos/service.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bentos import service


def test_a_worker_yields_after_each_accepted_connection_once_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        HttpToolsProtocol, "connection_made", lambda self, transport: calls.append("made")
    )
    # restored after the test, like HttpToolsProtocol's
    monkeypatch.setattr(H11Protocol, "connection_made", H11Protocol.connection_made)
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append("yield"))
    service.share_new_connections()
    service.share_new_connections()  # installed once, not stacked
    protocol: Any = object.__new__(HttpToolsProtocol)
    HttpToolsProtocol.connection_made(protocol, object())
    assert calls == ["made", "yield"]
