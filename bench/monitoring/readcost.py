"""The window read's cost on a cached benchmark log, opened read-only, step by step.

    python -m bench.monitoring.readcost 10000000 [cold]

Prints, for `window` (bounds and exact counts), `sample` (the 20,000 rows compared),
`labelled` (the labels and their predictions) and `label_figures`: wall and CPU seconds
and the bytes the process read from the disk (`/proc/self/io` read_bytes: what a cold
page cache costs, whatever the machine's load). `cold` first drops this one file's pages
from the page cache (`posix_fadvise(DONTNEED)`: no write, no other file touched).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.monitoring.logdb import MODEL, ensure_log
from predlog.log import PredictionLog


def _read_bytes() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"])


def read_only_log(path: str) -> PredictionLog:
    """The log at `path` opened read-only (no migration check, no journal-mode switch)."""
    log = PredictionLog.__new__(PredictionLog)
    log.url = f"sqlite:///{path}"
    log.is_sqlite = True
    log.engine = sa.create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False),
    )
    log._sqlite_values = True
    log._labels_lock = threading.Lock()
    return log


def main() -> None:
    requests = int(sys.argv[1])
    path = os.path.realpath(ensure_log(requests))
    if len(sys.argv) > 2 and sys.argv[2] == "cold":
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    log = read_only_log(path)
    out: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        b, t, c = _read_bytes(), time.perf_counter(), time.process_time()
        result = fn()
        out[name] = {
            "wall_s": round(time.perf_counter() - t, 3),
            "cpu_s": round(time.process_time() - c, 3),
            "disk_mb": round((_read_bytes() - b) / 1e6, 1),
        }
        return result

    bounds = step("window", lambda: log.window(MODEL, rows=requests))
    sample = step("sample", lambda: log.sample(bounds, 20_000, seed=0, roles=("champion",)))
    labelled = step("labelled", lambda: log.labelled(bounds, 20_000))
    step("label_figures", lambda: log.label_figures(bounds, None, 20_000, labelled=labelled))
    out["rows"] = {"sample": len(sample), "labelled": len(labelled.rows), "k": labelled.every}
    log.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
