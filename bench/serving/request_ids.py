"""What the shape of generated request ids costs the prediction log's writer.

    python -m bench.serving.request_ids                 # logs of 200k and 2M rows
    python -m bench.serving.request_ids --rows 100000 4000000 --rounds 8

The service gives every record it logs a request id (unless the caller sent one), and the
log indexes them (`ix_predictions_request_id`: labels join on it). For each size this
fills two fresh SQLite logs (WAL, synchronous=FULL, the serving process's background
checkpoints) with 100-record requests, 8 per commit, as a busy worker commits them: one
with the ids the service makes (`bentos.schema.new_request_ids`: time-ordered), one with
random 24-digit prefixes (`uuid4().hex`-like, what it made before session 19). Then
rounds of 50 more commits, the two logs alternated, time the CPU per row of writing and
indexing them (``time.thread_time`` around `PredictionLog.append` and the `catch_up` that
moves the staged rows into the indexed `predictions` table, where the ids' shape
matters since session 20; the checkpointer apart) and the bytes the process wrote per row
(``/proc/self/io``, the checkpoints included).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bentos.schema import new_request_ids
from predlog.log import PredictionLog, RowBlock

FEATURES = tuple(f"feature_{i}" for i in range(11))
REQUEST_ROWS = 100
REQUESTS_PER_COMMIT = 8
COMMITS_PER_ROUND = 50
_SUFFIXES = [f"{i:08x}" for i in range(REQUEST_ROWS)]


def random_ids(n: int) -> list[str]:
    """The ids as the service made them before: one random 24-digit prefix per request."""
    base = os.urandom(12).hex()
    return [base + suffix for suffix in _SUFFIXES[:n]]


def request(ids: Callable[[int], list[str]], rng: random.Random) -> RowBlock:
    now = time.time()
    rows = [
        (
            request_id,
            None,
            now,
            "bench",
            "3",
            "champion",
            tuple(round(rng.random() * 100, 2) for _ in FEATURES),
            round(rng.random() * 500, 6),
            0.84,
            None,
        )
        for request_id in ids(REQUEST_ROWS)
    ]
    return RowBlock(FEATURES, rows)


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes"):
            return int(line.split()[1])
    return 0


def filled(ids: Callable[[int], list[str]], rows: int, folder: Path) -> PredictionLog:
    """A fresh log of `rows` rows with these ids, as the serving process opens it."""
    log = PredictionLog(f"sqlite:///{folder / 'log.db'}", background_checkpoints=True)
    rng = random.Random(0)
    for _ in range(rows // (REQUEST_ROWS * REQUESTS_PER_COMMIT)):
        log.append(blocks=[request(ids, rng) for _ in range(REQUESTS_PER_COMMIT)])
    log.catch_up()
    return log


def timed(log: PredictionLog, ids: Callable[[int], list[str]]) -> tuple[float, float]:
    """(CPU µs per row, bytes written per row) of `COMMITS_PER_ROUND` more commits and the
    catch-up that indexes them."""
    rng = random.Random(1)
    commits = [
        [request(ids, rng) for _ in range(REQUESTS_PER_COMMIT)] for _ in range(COMMITS_PER_ROUND)
    ]
    cpu, before = 0.0, written_bytes()
    for blocks in commits:
        started = time.thread_time()
        log.append(blocks=blocks)
        cpu += time.thread_time() - started
    started = time.thread_time()
    log.catch_up()
    cpu += time.thread_time() - started
    rows = COMMITS_PER_ROUND * REQUESTS_PER_COMMIT * REQUEST_ROWS
    return cpu / rows * 1e6, (written_bytes() - before) / rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    variants = {"time-ordered (now)": new_request_ids, "random (before)": random_ids}
    print("| rows in the log | ids | write + index CPU µs/row, median (range) | bytes/row |")
    print("|---|---|---|---|")
    # Next to the state folder (same disk), not in a tmpfs /tmp.
    parent = Path(__file__).resolve().parents[2]
    for rows in args.rows:
        folder = Path(tempfile.mkdtemp(prefix="driftloop-ids-", dir=parent))
        try:
            logs = {
                name: filled(ids, rows, folder / str(k))
                for k, (name, ids) in enumerate(variants.items())
            }
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for round_ in range(args.rounds):  # alternated: the host's moods hit both alike
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for name in order:
                    results[name].append(timed(logs[name], variants[name]))
            for name, log in logs.items():
                log.close()
                cpu = sorted(r[0] for r in results[name])
                written = statistics.median(r[1] for r in results[name])
                print(
                    f"| {rows:,} | {name} | {statistics.median(cpu):.2f} "
                    f"({cpu[0]:.2f}–{cpu[-1]:.2f}) | {written:,.0f} |",
                    flush=True,
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
