"""Readiness of the whole server at start: every worker has loaded its champion.

`driftloop serve` runs several worker processes on one listening socket, and each one
answers ``/readyz`` for itself. The first worker to load its champion used to say
"ready" while its siblings were still starting; traffic sent at that moment met one
worker and a core busy with the others' start (bench/README.md "Session 11, the first
second after start": p99 ~20 ms in that second, 6-11 ms after it). So at start-up a
worker answers ``/readyz`` with 503 ``starting`` until every worker of the server has
loaded its champion.

The launcher (`driftloop.bentoml_serve`) makes a folder for the server's lifetime and
names it in `STARTED_DIR_ENV`; each worker writes ``worker-<index>`` there once its
champion is loaded (`mark_started`). Only the start is gated: a worker restarted later
(kill -9, crash) finds the markers of the start and does not make its siblings
unready while it comes back. A worker that never starts does not keep the server
unready for ever: after `grace_s` from the first marker, ``/readyz`` is 200 with a
``degraded`` reason instead. Without the variable (plain ``bentoml serve`` of a Bento)
each worker is ready on its own, as before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STARTED_DIR_ENV = "DRIFTLOOP_STARTED_DIR"
DEFAULT_GRACE_S = 60.0


def started_dir() -> Path | None:
    value = os.environ.get(STARTED_DIR_ENV)
    return Path(value) if value else None


def mark_started(worker_index: int | None) -> None:
    """Record that this worker loaded its champion (no-op outside the launcher)."""
    folder = started_dir()
    if folder is None:
        return
    try:
        marker = folder / f"worker-{worker_index if worker_index is not None else os.getpid()}"
        marker.write_text(str(os.getpid()))
    except OSError:  # the folder is gone (the server is stopping): nothing to gate
        pass


class StartupGate:
    """Whether every worker of the server has started; cheap once they have."""

    def __init__(self, workers: int, folder: Path | None, grace_s: float = DEFAULT_GRACE_S):
        self.workers = workers
        self.folder = folder
        self.grace_s = grace_s
        self._done = folder is None or workers <= 1

    def waiting(self) -> tuple[str | None, bool]:
        """(reason, blocking): None when all started; blocking False once past the grace."""
        if self._done or self.folder is None:
            return None, False
        try:
            markers = [p for p in self.folder.iterdir() if p.name.startswith("worker-")]
        except OSError:
            self._done = True
            return None, False
        if len(markers) >= self.workers:
            self._done = True
            return None, False
        reason = f"{len(markers)} of {self.workers} serving workers have loaded the champion"
        try:
            first = min((p.stat().st_mtime for p in markers), default=time.time())
        except OSError:
            first = time.time()
        return reason, time.time() - first < self.grace_s
