"""Serving workers spread new connections between them (bentos/connections.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bentos import connections, service
from bentos.connections import ConnectionShares


@pytest.fixture
def protocols(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """uvicorn's protocols with recording connection_made/lost (restored afterwards)."""
    calls: list[str] = []
    monkeypatch.setattr(
        HttpToolsProtocol, "connection_made", lambda self, transport: calls.append("made")
    )
    monkeypatch.setattr(
        HttpToolsProtocol, "connection_lost", lambda self, exc: calls.append("lost")
    )
    monkeypatch.setattr(H11Protocol, "connection_made", H11Protocol.connection_made)
    monkeypatch.setattr(H11Protocol, "connection_lost", H11Protocol.connection_lost)
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append("yield"))
    monkeypatch.setattr(connections.time, "sleep", lambda s: calls.append(f"pause {s}"))
    return calls


def test_a_lone_worker_yields_after_each_accepted_connection(
    protocols: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRIFTLOOP_STARTED_DIR", raising=False)
    service.share_new_connections()
    service.share_new_connections()  # installed once, not stacked
    protocol: Any = object.__new__(HttpToolsProtocol)
    HttpToolsProtocol.connection_made(protocol, object())
    HttpToolsProtocol.connection_lost(protocol, None)
    assert protocols == ["made", "yield", "lost"]


def test_a_worker_ahead_of_its_sibling_pauses_until_they_are_even(
    protocols: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DRIFTLOOP_STARTED_DIR", str(tmp_path))
    sibling = ConnectionShares(tmp_path, 2)  # worker 2, idle so far
    service.share_new_connections(workers=2, worker_index=1)
    protocol: Any = object.__new__(HttpToolsProtocol)
    HttpToolsProtocol.connection_made(protocol, object())  # 1 vs 0: even enough
    HttpToolsProtocol.connection_made(protocol, object())  # 2 vs 0: pause
    assert protocols == ["made", "yield", "made", f"pause {connections.PAUSE_S}"]
    protocols.clear()
    assert sibling.opened() is False  # the sibling took the next one: 2 vs 1
    HttpToolsProtocol.connection_made(protocol, object())  # 3 vs 1: pause
    HttpToolsProtocol.connection_lost(protocol, None)  # 2 vs 1
    HttpToolsProtocol.connection_lost(protocol, None)  # 1 vs 1
    HttpToolsProtocol.connection_made(protocol, object())  # 2 vs 1
    assert protocols == ["made", f"pause {connections.PAUSE_S}", "lost", "lost", "made", "yield"]


def test_counts_live_in_one_file_per_server_and_a_restart_resets_its_slot(tmp_path: Path) -> None:
    first, second = ConnectionShares(tmp_path, 1), ConnectionShares(tmp_path, 2)
    assert [first.opened(), first.opened(), first.opened()] == [False, True, True]
    assert [second.opened(), second.opened()] == [False, False]  # 2 vs 3: behind
    second.closed()
    second.closed()
    second.closed()  # never below zero
    assert second.table[2 * second.slot + 1] == 0
    again = ConnectionShares(tmp_path, 1)  # worker 1 restarted: its connections are gone
    assert again.table[2 * again.slot + 1] == 0
    assert again.opened() is False


def test_a_dead_siblings_slot_makes_no_one_pause(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(gone.stdout)
    time.sleep(0.05)
    survivor, dead = ConnectionShares(tmp_path, 1), ConnectionShares(tmp_path, 2)
    dead.table[2 * dead.slot] = pid  # the slot of a worker killed with no connections
    assert [survivor.opened() for _ in range(5)] == [False] * 5
