"""What the prediction log's durability costs per commit on this disk.

    python -m bench.serving.commit_cost          # 500 one-row commits per mode

The service answers a request only after the SQLite (WAL) commit holding its records is
fsynced (`synchronous=FULL`). This times a one-row commit of a typical log row with that
setting against `NORMAL` (no fsync per commit: a power cut can lose the last commits),
so the latency it adds at concurrency 1 is a measured figure, not a guess.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROW = "x" * 300  # about one logged 11-feature record as JSON


def commit_times(
    folder: Path, synchronous: str, commits: int, journal_mode: str = "WAL"
) -> list[float]:
    """Seconds of each of `commits` one-row commits to a fresh SQLite file in `folder`
    (`bench.training.mlflow_store` sets `journal_mode` against MLflow's default too)."""
    conn = sqlite3.connect(folder / f"{journal_mode}-{synchronous}.db", isolation_level=None)
    try:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, row TEXT)")
        times = []
        for _ in range(commits):
            start = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO log (row) VALUES (?)", (ROW,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
        return times
    finally:
        conn.close()


def main(commits: int = 500) -> int:
    # Next to the state folder (same disk), not in a tmpfs /tmp.
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2]) as tmp:
        for mode in ("FULL", "NORMAL"):
            times = sorted(commit_times(Path(tmp), mode, commits))
            p99 = times[int(len(times) * 0.99) - 1]
            print(
                f"synchronous={mode:<6}  one-row commit: median "
                f"{statistics.median(times) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
