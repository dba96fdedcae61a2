"""What staging a serving commit saves the writer, and what the first reader pays later.

    python -m bench.serving.staging                   # 6 alternated rounds of 50 commits
    python -m bench.serving.staging --rows 2000000    # on a log that already holds 2M rows

Since session 20 a serving commit on SQLite is one `prediction_blocks` row per set of
feature names (`PredictionLog.append`), and the first reader after it moves the rows into
the indexed `predictions` table (`PredictionLog.catch_up`). This fills two fresh logs
(WAL, synchronous=FULL, background checkpoints, as the serving process opens them) to
`--rows` rows and then, in alternated rounds of 50 commits of 8 requests × 100 records,
times with ``time.thread_time``:

- *row by row (before)*: the commit as the writer made it before, the rows straight into
  `predictions` (`_sqlite_insert` of `_sqlite_params`, the feature objects built in the
  writer; the code `append` ran until session 20);
- *staged (now)*: `append`, i.e. what a serving worker's writer thread does now;
- *catch-up*: `catch_up` of the staged log after the round, i.e. what the next reader
  (the monitor's check, POST /feedback) pays for those rows.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.serving.request_ids import REQUESTS_PER_COMMIT, request
from bentos.schema import new_request_ids
from predlog.log import _FEATURES, PredictionLog, RowBlock, _sqlite_insert, _sqlite_params

COMMITS_PER_ROUND = 50


def row_by_row(log: PredictionLog, blocks: Sequence[RowBlock]) -> None:
    """One commit as `PredictionLog.append` wrote it on SQLite before staging."""
    with log.engine.begin() as conn:
        params = [
            _sqlite_params(row, dict(zip(block.feature_names, row[_FEATURES], strict=True)))
            for block in blocks
            for row in block.rows
        ]
        _sqlite_insert(conn, params)
    if log.checkpointer is not None:
        log.checkpointer.nudge(len(params))


def fresh(folder: Path, rows: int) -> PredictionLog:
    log = PredictionLog(f"sqlite:///{folder / 'log.db'}", background_checkpoints=True)
    rng = random.Random(0)
    per_commit = 100 * REQUESTS_PER_COMMIT
    for _ in range(rows // per_commit):
        row_by_row(log, [request(new_request_ids, rng) for _ in range(REQUESTS_PER_COMMIT)])
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in each log first")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    parent = Path(__file__).resolve().parents[2]  # the state folder's disk, not a tmpfs
    folder = Path(tempfile.mkdtemp(prefix="driftloop-staging-", dir=parent))
    before_key, now_key = "row by row (before)", "staged (now)"
    results: dict[str, list[float]] = {before_key: [], now_key: [], "catch-up": []}
    try:
        before, now = fresh(folder / "before", args.rows), fresh(folder / "now", args.rows)
        rng = random.Random(1)
        rows = COMMITS_PER_ROUND * REQUESTS_PER_COMMIT * 100
        for round_ in range(args.rounds):
            commits = [
                [request(new_request_ids, rng) for _ in range(REQUESTS_PER_COMMIT)]
                for _ in range(COMMITS_PER_ROUND)
            ]
            for which in ["before", "now"] if round_ % 2 == 0 else ["now", "before"]:
                started = time.thread_time()
                for blocks in commits:
                    if which == "before":
                        row_by_row(before, blocks)
                    else:
                        now.append(blocks=blocks)
                spent = (time.thread_time() - started) / rows * 1e6
                results[before_key if which == "before" else now_key].append(spent)
            started = time.thread_time()
            moved = now.catch_up()
            results["catch-up"].append((time.thread_time() - started) / max(moved, 1) * 1e6)
        before.close()
        now.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": args.rows, "round_rows": rows, "us_per_record": results}))
        return 0
    print(f"{args.rows:,} rows in each log first; {args.rounds} rounds of {rows:,} rows")
    print("| what | CPU µs per record, median (range) |")
    print("|---|---|")
    for name, values in results.items():
        values.sort()
        print(f"| {name} | {statistics.median(values):.2f} ({values[0]:.2f}–{values[-1]:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
