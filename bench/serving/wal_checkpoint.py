"""Commit latency of 100-row appends to a SQLite prediction log: WAL checkpoints in the
commit (SQLite's default) against `WalCheckpointer` (what the serving process uses).

    python -m bench.serving.wal_checkpoint [--commits 1500] [--rounds 2]

Prints, per round and mode, the percentiles of `PredictionLog.append` wall time (the
first 100 commits left out) and the WAL file's size at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

FEATURES = {
    "season": 1.0,
    "mnth": "Jan",
    "hr": 3.0,
    "holiday": 0.0,
    "weekday": 2.0,
    "workingday": 1.0,
    "weathersit": "clear",
    "temp": 0.3,
    "atemp": 0.31,
    "hum": 0.6,
    "windspeed": 0.2,
}


def run(background: bool, commits: int, rows: int = 100) -> dict[str, float]:
    from predlog.log import PredictionLog, PredictionRecord

    with tempfile.TemporaryDirectory(prefix="driftloop-wal-") as tmp:
        path = Path(tmp) / "log.db"
        log = PredictionLog(f"sqlite:///{path}", background_checkpoints=background)
        rng = random.Random(0)
        seconds = []
        for _ in range(commits):
            rid = uuid.uuid4().hex
            records = [
                PredictionRecord(
                    f"{rid}-{k}",
                    "m",
                    "1",
                    "champion",
                    dict(FEATURES, temp=rng.random()),
                    rng.random() * 100,
                    3.0,
                )
                for k in range(rows)
            ]
            started = time.perf_counter()
            log.append(records)
            seconds.append(time.perf_counter() - started)
        wal = path.with_name("log.db-wal")
        wal_mb = os.path.getsize(wal) / 1e6 if wal.exists() else 0.0
        log.close()
    ms = sorted(s * 1000 for s in seconds[100:])
    n = len(ms)
    return {
        "p50": ms[n // 2],
        "p90": ms[int(n * 0.9)],
        "p99": ms[int(n * 0.99)],
        "max": ms[-1],
        "mean": sum(ms) / n,
        "wal_mb": wal_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for background in (False, True):
            r = run(background, args.commits)
            mode = "background checkpoints" if background else "checkpoint in the commit"
            print(
                f"round {round_} {mode:26s} append of 100 rows, ms: p50 {r['p50']:.2f} "
                f"p90 {r['p90']:.2f} p99 {r['p99']:.2f} max {r['max']:.2f} "
                f"mean {r['mean']:.2f}; WAL {r['wal_mb']:.1f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
