"""Worker restart: seconds from `kill -9` of every serving process to the next 200.

`driftloop serve` runs each of its workers as a warm parent (the *keeper*, the process
BentoML's supervisor started) and a serving child the keeper forked
(driftloop/warm_worker.py). `measure_restart(server, url, body, headers)` SIGKILLs the
processes that serve (the children; BentoML's stock workers under a plain `bentoml
serve`) while one client keeps posting `body`, and returns how long after the kill the
first request sent after it was answered with 200 and when the first new serving process
appeared. With `whole=True` it kills the keepers and their children together: the
supervisor then starts every worker from scratch (a new interpreter importing everything;
its check for dead workers runs every 0.25 s under `driftloop serve`,
driftloop/bentoml_serve.py). `measure_one` kills one serving process of several under
load: the others keep answering while it is replaced. `measure_all` + `report` are what
`python -m bench --only serving` runs and writes.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from driftloop import procs
from driftloop.warm_worker import Workers, find_workers

KILLS = 3  # kill -9 rounds of the serving processes (the target is judged on the slowest)


def workers(server: procs.Server) -> Workers:
    """The service workers under `bentoml serve`: keepers and their serving children."""
    return find_workers(server.process.pid)


def worker_pids(server: procs.Server) -> set[int]:
    """Pids of the processes that serve (forked children, or BentoML's stock workers)."""
    return workers(server).serving


@dataclass(frozen=True)
class Restart:
    """One kill -9 of every serving process: seconds from the kill to ..."""

    respawned_s: float  # ... the first new serving process (keeper's fork or supervisor's)
    answered_s: float  # ... the first 200 for a request sent after the kill
    killed: int = 0  # processes killed


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
    whole: bool = False,
) -> Restart:
    """SIGKILL every serving process (`whole`: the keepers too); when the first new
    serving process started and the first 200 came."""
    headers = {"content-type": "application/json", **headers}
    with httpx.Client(timeout=10) as client:
        if client.post(url, content=body, headers=headers).status_code != 200:
            raise RuntimeError(f"{server.name} does not answer before the kill")
        found = workers(server)
        pids = found.serving
        if not pids:
            raise RuntimeError(f"no BentoML workers found under {server.name}")
        victims = pids | found.keepers if whole else pids
        respawned: list[float] = []
        done = threading.Event()
        watcher = threading.Thread(target=_watch_respawn, args=(server, pids, respawned, done))
        killed_at = time.perf_counter()
        for pid in victims:
            psutil.Process(pid).kill()
        watcher.start()
        try:
            while time.perf_counter() - killed_at < timeout_s:
                try:
                    if client.post(url, content=body, headers=headers).status_code == 200:
                        answered_s = time.perf_counter() - killed_at
                        respawn_s = respawned[0] - killed_at if respawned else float("nan")
                        return Restart(respawn_s, answered_s, len(victims))
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
    """SIGKILL one serving process while `clients` threads post `body` back to back, and
    count what they get for `window_s` after the kill (long enough for its replacement)."""
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
    """Append the time the first serving process not in `killed` is seen (every 20 ms)."""
    while not done.is_set():
        if worker_pids(server) - killed:
            found.append(time.perf_counter())
            return
        done.wait(0.02)


def wait_settled(server: procs.Server, count: int, timeout_s: float = 120.0) -> None:
    """Until `count` processes serve and have been idle for a second (started up)."""

    def cpu(pids: set[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                return float("inf")
            total += times.user + times.system
        return total

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = worker_pids(server)
        if len(pids) == count:
            before = cpu(pids)
            time.sleep(1.0)
            if worker_pids(server) == pids and cpu(pids) - before < 0.1:
                return
        else:
            time.sleep(0.2)
    raise TimeoutError(f"{server.name}: {count} serving processes not settled in {timeout_s:g} s")


@dataclass(frozen=True)
class Results:
    """What `measure_all` saw: the kill -9 rounds, the whole-worker kill, one of two."""

    serving: list[Restart]  # kill -9 of every serving process (the keepers stay)
    whole: Restart  # kill -9 of every keeper and serving process together
    one: OneKilled  # kill -9 of one serving process of two under load
    workers: int

    @property
    def answered_s(self) -> float:
        """The slowest round: "answering again within 3 s" must hold for every kill."""
        return max(r.answered_s for r in self.serving)


def measure_all(
    server: procs.Server, url: str, body: bytes, headers: dict[str, str], kills: int = KILLS
) -> Results:
    """One of several killed under load, `kills` kills of every serving process, then one
    of the keepers and children together (each once the workers have settled)."""
    count = len(worker_pids(server))
    wait_settled(server, count)
    one = measure_one(server, url, body, headers)
    rounds = []
    for _ in range(kills):
        wait_settled(server, count)
        rounds.append(measure_restart(server, url, body, headers))
    wait_settled(server, count)
    whole = measure_restart(server, url, body, headers, whole=True)
    wait_settled(server, count)
    return Results(rounds, whole, one, count)


def report(section: Any, results: Results) -> None:
    """The rows of the serving section: the target and what else was killed."""
    rounds = ", ".join(f"{r.answered_s:.1f}" for r in results.serving)
    section.target(
        f"driftloop answers again after kill -9 of its {results.workers} serving processes "
        "(defaults; each worker's warm parent forks a new one)",
        "≤ 3 s",
        f"{results.answered_s:.1f} s (slowest of {rounds} s; new process after "
        f"{statistics.median(r.respawned_s for r in results.serving):.2f} s)",
        results.answered_s <= 3,
    )
    whole = results.whole
    section.target(
        f"kill -9 of every worker process, warm parents included ({whole.killed} processes; "
        "reported): the supervisor starts them from scratch",
        "reported",
        f"{whole.answered_s:.1f} s to the next answer; new worker process after "
        f"{whole.respawned_s:.2f} s",
        None,
    )
    one = results.one
    section.target(
        f"kill -9 of one of driftloop's {results.workers} serving processes under 4 clients "
        "(reported): the other keeps answering",
        "reported",
        f"{one.answered:,} answered, {one.failed} failed (in flight on the killed process), "
        f"longest gap {one.longest_gap_s:.2f} s in the {one.window_s:g} s after the kill; "
        f"new serving process after {one.respawned_s:.2f} s",
        None,
    )
