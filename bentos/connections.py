"""Spread new connections evenly over the serving workers.

`driftloop serve` runs its workers on one listening socket. A client that opens its
connections at once (wrk, a load balancer's pool) wakes every worker, but the one
already running accepts connection after connection (uvloop accepts until the queue is
empty) while its siblings' idle cores are still waking up: on this 2-core VM, 64
connections opened at once landed 64/0, 63/1 or 62/2 in 5 of 15 tries and evenly
(±4) in 3 (`python -m bench.serving.cpu_ab --balance 15 --concurrency 64`, bench/README
"Session 13"). Clients keep their connections, so half the machine then idles for the
whole run. `os.sched_yield()` after each accept (Session 9) does not help when the
sibling's core is asleep: there is nothing else to run on this one.

Each worker keeps its pid and its open connections in a slot of a small file shared by
the server's workers (in the launcher's folder, `bentos.startup.STARTED_DIR_ENV`). A
worker that has just accepted a connection while a live sibling holds at least two
fewer pauses `PAUSE_S` before it accepts the next, so that sibling, woken by the same
burst, takes it. Balanced workers never pause; a dead worker's slot is left out (no
pause for a sibling that cannot accept) and its successor resets it. The pause blocks
the worker's event loop, so it is short, and it happens only on new connections while
the spread is uneven.
Without the launcher's folder (plain ``bentoml serve``) or with one worker: no file,
no pause, only the `sched_yield`.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Any

SLOTS = 64  # worker indexes modulo this
PAUSE_S = 0.0005
FILE_NAME = "connections"


class ConnectionShares:
    """This worker's slot (its pid, its open connections) among its siblings'."""

    def __init__(self, folder: Path, index: int) -> None:
        self.slot = index % SLOTS
        self.pid = os.getpid()
        path = folder / FILE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SLOTS * 16:
                os.ftruncate(fd, SLOTS * 16)
            self._map = mmap.mmap(fd, SLOTS * 16)
        finally:
            os.close(fd)
        self.table = memoryview(self._map).cast("q")  # pid, count, pid, count, ...
        self.table[2 * self.slot + 1] = 0
        self.table[2 * self.slot] = self.pid

    def opened(self) -> bool:
        """Count a new connection; True when a live sibling now holds at least two
        fewer (a dead one's slot is left out until its successor resets it)."""
        table, own = self.table, 2 * self.slot
        mine = table[own + 1] + 1
        table[own + 1] = mine
        for slot in range(0, 2 * SLOTS, 2):
            pid = table[slot]
            if pid and slot != own and table[slot + 1] < mine - 1 and _alive(pid):
                return True
        return False

    def closed(self) -> None:
        own = 2 * self.slot + 1
        self.table[own] = max(0, self.table[own] - 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def balance_connections(protocols: list[Any], shares: ConnectionShares | None) -> None:
    """Wrap `connection_made`/`connection_lost` of uvicorn's HTTP protocols: after each
    accepted connection yield the CPU, and pause while this worker holds more than its
    share (`ConnectionShares`)."""
    for protocol in protocols:
        made, lost = protocol.connection_made, protocol.connection_lost
        if getattr(made, "_driftloop_balances", False):
            continue

        def connection_made(self: Any, transport: Any, _made: Any = made) -> None:
            _made(self, transport)
            if shares is not None and shares.opened():
                time.sleep(PAUSE_S)  # a sibling woken by the same burst takes the next
            else:
                os.sched_yield()  # the next queued connection: a sibling's, if it is ready

        def connection_lost(self: Any, exc: Exception | None, _lost: Any = lost) -> None:
            if shares is not None:
                shares.closed()
            _lost(self, exc)

        connection_made._driftloop_balances = True  # type: ignore[attr-defined]
        protocol.connection_made = connection_made
        protocol.connection_lost = connection_lost
