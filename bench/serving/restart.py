"""Worker restart: seconds from `kill -9` of every serving worker to the next 200.

`measure(server, url, body, headers)` finds the BentoML service workers under a running
`bentoml serve`, SIGKILLs them all while one client keeps posting `body`, and returns
how long after the kill the first request sent after it was answered with 200 (the
arbiter starts new workers; each loads its champion from the local store before it
accepts connections). `measure_restart` also says when the first new worker process
started (BentoML's supervisor looks for dead workers every 10 s; `driftloop serve`
makes that 0.25 s, driftloop/bentoml_serve.py). `measure_one` kills one worker of
several under load: the others keep answering while it is replaced.
"""

from __future__ import annotations

import itertools
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


@dataclass(frozen=True)
class OneKilled:
    """kill -9 of one worker of several while clients keep posting, over `window_s`."""

    answered: int  # requests answered 200 in the window after the kill
    failed: int  # requests without a 200 (in flight on the killed worker: connection reset)
    longest_gap_s: float  # longest time in the window without any 200
    respawned_s: float  # seconds until the replacement worker process started
    window_s: float


def measure_one(
    server: procs.Server,
    url: str,
    body: bytes,
    headers: dict[str, str],
    clients: int = 4,
    window_s: float = 15.0,
) -> OneKilled:
    """SIGKILL one worker while `clients` threads post `body` back to back, and count
    what they get for `window_s` after the kill (long enough for the replacement to load)."""
    headers = {"content-type": "application/json", **headers}
    pids = worker_pids(server)
    if len(pids) < 2:
        raise RuntimeError(f"{server.name} runs {len(pids)} worker(s); this needs two or more")
    lock = threading.Lock()
    answers: list[float] = []
    failed = [0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    ok = http.post(url, content=body, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        answers.append(time.perf_counter())
                    else:
                        failed[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # clients running on every worker before the kill
    respawned: list[float] = []
    done = threading.Event()
    watcher = threading.Thread(target=_watch_respawn, args=(server, pids, respawned, done))
    with lock:
        answers.clear()
        failed[0] = 0
    killed_at = time.perf_counter()
    psutil.Process(sorted(pids)[0]).kill()
    watcher.start()
    try:
        time.sleep(window_s)
    finally:
        stop.set()
        done.set()
        for thread in [*threads, watcher]:
            thread.join()
    end = killed_at + window_s
    inside = sorted(t for t in answers if killed_at <= t <= end)
    gap = max(b - a for a, b in itertools.pairwise([killed_at, *inside, end]))
    respawn_s = respawned[0] - killed_at if respawned else float("nan")
    return OneKilled(len(inside), failed[0], gap, respawn_s, window_s)


def _watch_respawn(
    server: procs.Server, killed: set[int], found: list[float], done: threading.Event
) -> None:
    """Append the time the first worker not in `killed` is seen (polled every 20 ms)."""
    while not done.is_set():
        if worker_pids(server) - killed:
            found.append(time.perf_counter())
            return
        done.wait(0.02)
