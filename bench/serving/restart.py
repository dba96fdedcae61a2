"""Worker restart: seconds from `kill -9` of every serving worker to the next 200.

`measure(server, url, body, headers)` finds the BentoML service workers under a running
`bentoml serve`, SIGKILLs them all while one client keeps posting `body`, and returns
how long after the kill the first request sent after it was answered with 200 (the
arbiter starts new workers; each loads its champion from the local store before it
accepts connections). `measure_restart` also says when the first new worker process
started (BentoML's supervisor looks for dead workers every 10 s; `driftloop serve`
makes that 0.25 s, driftloop/bentoml_serve.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import psutil

from driftloop import procs

WORKER_MARK = "_bentoml_impl.worker.service"


def worker_pids(server: procs.Server) -> set[int]:
    """Pids of the service workers under `bentoml serve` (not the arbiter)."""
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if WORKER_MARK in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids


@dataclass(frozen=True)
class Restart:
    """One kill -9 of every worker: seconds from the kill to ..."""

    respawned_s: float  # ... the first new worker process (the supervisor's reaction)
    answered_s: float  # ... the first 200 for a request sent after the kill


def measure(
    server: procs.Server,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float = 120.0,
) -> float:
    """Seconds from SIGKILL of all workers to the first 200 for a request sent after it."""
    return measure_restart(server, url, body, headers, timeout_s).answered_s


def measure_restart(
    server: procs.Server,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float = 120.0,
) -> Restart:
    """SIGKILL all workers; when the first new one started and the first 200 came."""
    headers = {"content-type": "application/json", **headers}
    with httpx.Client(timeout=10) as client:
        if client.post(url, content=body, headers=headers).status_code != 200:
            raise RuntimeError(f"{server.name} does not answer before the kill")
        pids = worker_pids(server)
        if not pids:
            raise RuntimeError(f"no BentoML workers found under {server.name}")
        respawned: list[float] = []
        done = threading.Event()
        watcher = threading.Thread(target=_watch_respawn, args=(server, pids, respawned, done))
        killed_at = time.perf_counter()
        for pid in pids:
            psutil.Process(pid).kill()
        watcher.start()
        try:
            while time.perf_counter() - killed_at < timeout_s:
                try:
                    if client.post(url, content=body, headers=headers).status_code == 200:
                        answered_s = time.perf_counter() - killed_at
                        respawn_s = respawned[0] - killed_at if respawned else float("nan")
                        return Restart(respawn_s, answered_s)
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        finally:
            done.set()
            watcher.join()
    raise TimeoutError(f"{server.name} did not answer within {timeout_s:g} s of the kill")


def _watch_respawn(
    server: procs.Server, killed: set[int], found: list[float], done: threading.Event
) -> None:
    """Append the time the first worker not in `killed` is seen (polled every 20 ms)."""
    while not done.is_set():
        if worker_pids(server) - killed:
            found.append(time.perf_counter())
            return
        done.wait(0.02)
