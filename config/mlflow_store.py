"""MLflow's SQLite store in write-ahead-log mode, whoever opens it first.

MLflow leaves a SQLite backend store in SQLite's default rollback-journal mode: every
commit writes the journal, the database and deletes the journal, with an fsync each
(`python -m bench.training.mlflow_store` measures a commit of each mode on this disk),
and a commit locks every reader out. Each registry write of a training run (the run, its
batch of metrics, the version, its tags, the aliases) waits for that in the server's one
process. In WAL mode a commit appends to the log with one fsync — ``synchronous`` stays
at SQLite's FULL, so a registered version or an alias move survives a power cut as
before — and readers (the MLflow UI, the serving process following its aliases, the
monitor) read beside a writer instead of waiting for it.

The mode is stored in the database file: setting it once, before the tracking server
or the first embedded client opens the file, is enough, and every later connection
(MLflow's, `mlflow ui`'s, sqlite3's) uses it. WAL needs the processes that open the file
on one machine (its index lives in shared memory): true of the state folder's
``mlflow.db``; a tracking server on a network share belongs on PostgreSQL anyway.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_store_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store
    (a server URL, PostgreSQL, an in-memory SQLite)."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def use_wal(db: Path, timeout_s: float = 2.0) -> bool:
    """Put the SQLite database `db` in WAL mode, creating the file (and its folder) if
    missing; True when it is in WAL mode afterwards.

    Safe on a store in use: a database another process holds in a transaction for
    longer than `timeout_s` keeps its mode (False; the next start tries again), and the
    switch itself changes no data. A file that is not a SQLite database is left alone
    (False): MLflow's own error names it when it opens it. MLflow creates its tables in
    a file made here as in one it made itself.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(sqlite3.connect(db, timeout=timeout_s)) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    except sqlite3.DatabaseError:  # locked past the timeout, or not a database file
        return False
    return str(mode).lower() == "wal"
