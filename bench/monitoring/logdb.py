"""A prediction log of N requests for the monitoring benchmark, generated once and cached.

    python -m bench.monitoring.logdb --requests 1000000     # prints the file's path

The file is a real `PredictionLog` (same tables and indexes, opened by the same code) under
the state folder, `.driftloop/bench/predlog-<requests>-<key>.db`; the key hashes the
schema (tables + indexes) and this generator's version, so a schema change makes a new
file and reruns with the same schema reuse it.

What it holds, in log order: N answered requests of the benchmark model (champion v1),
a shadow row (challenger v2) for every 10th request, and one row of another model for
every 10th request, so the reads must filter by model and role as in production. Every
10th request gets a label. The features resample the whole bundled year with jittered
numbers (the later months drift from a January–October reference); predictions and
labels are the demand with noise. Rows are made by SQLite itself (one `INSERT … SELECT`
over a recursive CTE joined to a 50,000-row table of resampled rows), with the secondary
indexes built after the rows, so 10M requests take a few minutes once.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import time
from pathlib import Path

from bench.common import BUNDLED, REPO

MODEL = "bench-model"
OTHER_MODEL = "other-model"
FEATURES = [
    "season",
    "mnth",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
]  # the bundled model's features
JITTERED = ["temp", "atemp", "hum", "windspeed"]
SOURCE_ROWS = 50_000
GENERATOR_VERSION = "1"
T0 = 1_767_225_600.0  # 2026-01-01 UTC; one request every 10 ms


def schema_key() -> str:
    """Hash of the log's DDL (tables and indexes) and of this generator's version."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from predlog.tables import feedback_table, predictions_table

    dialect = sqlite.dialect()
    parts = [GENERATOR_VERSION]
    for table in (predictions_table, feedback_table):
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts += sorted(str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes)
    del sa
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    from config.settings import Settings

    state = Settings().state_path
    return (state if state.is_absolute() else REPO / state) / "bench"


def ensure_log(requests: int, folder: Path | None = None) -> Path:
    """The cached log of `requests` requests, generated if missing."""
    folder = folder or cache_dir()
    path = folder / f"predlog-{requests}-{schema_key()}.db"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in folder.glob(partial.name + "*"):
        leftover.unlink()
    generate(partial, requests)
    partial.rename(path)
    return path


def generate(path: Path, requests: int) -> None:
    import numpy as np
    import pandas as pd

    from predlog import jsonio
    from predlog.log import PredictionLog
    from predlog.tables import feedback_table, predictions_table

    log = PredictionLog(f"sqlite:///{path}")  # the real schema
    log.close()
    data = pd.read_csv(BUNDLED)
    rng = np.random.default_rng(0)
    source = data.iloc[rng.integers(0, len(data), size=SOURCE_ROWS)].reset_index(drop=True)
    for column in [*JITTERED, "bikers"]:
        noise = rng.normal(scale=0.02 * float(data[column].std()), size=SOURCE_ROWS)
        source[column] = source[column].to_numpy() + noise
    prediction = source["bikers"].to_numpy() + rng.normal(scale=30.0, size=SOURCE_ROWS)
    rows = [
        (k, jsonio.dumps_text(features), float(p), float(label))
        for k, (features, p, label) in enumerate(
            zip(
                source[FEATURES].to_dict(orient="records"),
                prediction,
                source["bikers"],
                strict=True,
            )
        )
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-200000")
        secondary = [
            (name, sql)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
            )
        ]
        for name, _ in secondary:  # built once after the rows: far faster than row by row
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("BEGIN")
        conn.execute(
            "CREATE TEMP TABLE src (k INTEGER PRIMARY KEY, features TEXT, prediction REAL, "
            "label REAL)"
        )
        conn.executemany("INSERT INTO src VALUES (?, ?, ?, ?)", rows)
        conn.execute("CREATE TEMP TABLE kinds (kind INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO kinds VALUES (?)", [(0,), (1,), (2,)])
        # kind 0: the answer; 1: a shadow row; 2: another model's request (every 10th).
        conn.execute(
            f"""
            INSERT INTO {predictions_table.name} (request_id, entity_id, ts, model_name,
                model_version, role, features, prediction, latency_ms)
            WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
            SELECT CASE kind WHEN 2 THEN 'o' ELSE 'r' END || n, NULL, ? + n * 0.01,
                   CASE kind WHEN 2 THEN ? ELSE ? END,
                   CASE kind WHEN 1 THEN '2' ELSE '1' END,
                   CASE kind WHEN 1 THEN 'shadow' ELSE 'champion' END,
                   src.features, src.prediction + kind, 3.0
            FROM seq JOIN kinds ON kind = 0 OR n % 10 = 0
                     JOIN src ON src.k = (n * 7919) % {SOURCE_ROWS}
            ORDER BY n, kind
            """,
            (requests - 1, T0, OTHER_MODEL, MODEL),
        )
        conn.execute(
            f"""
            INSERT INTO {feedback_table.name} (request_id, ts, model_name, label)
            SELECT 'r' || n, ? + n * 0.01 + 60, ?, src.label
            FROM (WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 10 FROM seq
                  WHERE n + 10 < ?) SELECT n FROM seq)
            JOIN src ON src.k = (n * 7919) % {SOURCE_ROWS}
            """,
            (T0, MODEL, requests),
        )
        conn.execute("COMMIT")
        for _, sql in secondary:
            conn.execute(sql)
        conn.execute("ANALYZE")
    finally:
        conn.close()
    PredictionLog(f"sqlite:///{path}").close()  # back to WAL; every index in place


def main() -> None:
    parser = argparse.ArgumentParser(description="generate (or find) a cached benchmark log")
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    path = ensure_log(args.requests)
    print(f"{path} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
