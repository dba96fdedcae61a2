"""The prediction log: every prediction and every feedback label, durably appended.

Storage is any SQLAlchemy URL; the default is a SQLite file in WAL mode with
``synchronous=FULL`` (each commit is fsynced). Writes go through a
`GroupCommitWriter`: one thread takes everything queued, writes it in one
transaction, and only then completes the futures the requests wait on, so a
record acknowledged to a client is on disk while the cost of a commit is shared
by all the requests of a batch.

On SQLite and PostgreSQL a commit's predictions are *staged*: one `prediction_blocks`
row per set of feature names holds the commit's rows as one JSON array, so the serving
writer inserts a row or two per commit and maintains no index (about a sixth of the
writer CPU per record it spent on one `predictions` row and five index entries per
record; bench/README.md "Session 20"). The first reader after it
(`PredictionLog.catch_up`, which every read calls: the monitor's check, POST /feedback's
request-id lookup, the CLI) moves the staged rows into `predictions`, one row per
record, in commit order, in transactions of a few thousand rows, with the same text per
column as a direct insert; readers see every acknowledged prediction, and the indexing
happens off the request path. On SQLite moving uses a few multi-row ``INSERT ... VALUES``
statements (a power of two rows each): the sqlite3 module releases the GIL around every
statement it steps, so one statement per few hundred rows, not ``executemany``'s one per
row (bench/RESULTS.md). PostgreSQL stages the same way (its own lock for `catch_up`);
other databases get the rows directly, row by row.

Monitoring reads it back by time window and model version (`PredictionLog.frame`).

Labels (`PredictionLog.store_labels`, what POST /feedback calls) follow one policy:
only for request ids this log holds a prediction of that model for, and the first
label of a prediction counts; later ones go to `label_history` for audit, which
nothing reads back. So `feedback` holds at most one label per (model, request id).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import logging
import math
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from config.names import CHALLENGER, CHAMPION, SHADOW
from predlog import jsonio, migrations
from predlog.tables import (
    feedback_table,
    label_history_table,
    prediction_blocks_table,
    predictions_table,
)

log = logging.getLogger("driftloop.predlog")

ANSWERED_ROLES = (CHAMPION, CHALLENGER)
"""Roles whose rows are answers callers got: one per request. Shadow rows are extra
predictions of the same requests and never count toward a window's size."""


SUPERSEDED = "superseded"


@dataclass(frozen=True)
class PredictionRecord:
    """One model answer (or shadow answer) for one input record."""

    request_id: str
    model_name: str
    model_version: str
    role: str
    features: dict[str, Any]
    prediction: Any
    latency_ms: float  # request arrival to prediction ready (commit wait excluded)
    ts: float = field(default_factory=time.time)
    entity_id: str | None = None
    scores: dict[str, float] | None = None  # a classifier's class probabilities

    @property
    def timestamp(self) -> datetime:
        return pd.Timestamp(self.ts, unit="s", tz="UTC").to_pydatetime()


LogRow = tuple[
    str, str | None, float, str, str, str, dict[str, Any], Any, float, dict[str, float] | None
]
"""A prediction as written: request_id, entity_id, ts, model_name, model_version, role,
features, prediction, latency_ms, scores (the service builds these without a record object).
Rows of the nine fields before `scores` existed are still accepted (scores null)."""


def _with_scores(row: Sequence[Any]) -> Sequence[Any]:
    return row if len(row) == len(_ROW_COLUMNS) else (*row, None)


def as_row(p: PredictionRecord) -> LogRow:
    return (
        p.request_id,
        p.entity_id,
        p.ts,
        p.model_name,
        p.model_version,
        p.role,
        p.features,
        p.prediction,
        p.latency_ms,
        p.scores,
    )


_ROW_COLUMNS = (
    "request_id",
    "entity_id",
    "ts",
    "model_name",
    "model_version",
    "role",
    "features",
    "prediction",
    "latency_ms",
    "scores",
)
_FEATURES = _ROW_COLUMNS.index("features")
# SQLite: rows go in as multi-row `INSERT ... VALUES (...), (...)` statements of a power
# of two rows each (100 rows: 64 + 32 + 4), so a handful of statements stay prepared in
# the connection's cache. One statement runs as one `sqlite3_step` (the GIL released
# once) and costs about half the CPU of the earlier `json_each` insert (which parsed the
# rows' JSON once per extracted column) or of `executemany`. The JSON columns get the
# text SQLAlchemy's JSON type writes (`jsonio`, `None` as `null`), and the column
# affinities convert it the same way. 256 rows × 10 parameters stays under SQLite's
# limit of host parameters (32,766 since 3.32; 999 before: 64 rows).
_SQLITE_MAX_ROWS = 256 if sqlite3.sqlite_version_info >= (3, 32) else 64


@functools.cache
def _sqlite_values_insert(n_rows: int) -> str:
    """`INSERT INTO predictions (...) VALUES` with `n_rows` rows of placeholders."""
    one = "(" + ", ".join("?" for _ in _ROW_COLUMNS) + ")"
    return f"INSERT INTO predictions ({', '.join(_ROW_COLUMNS)}) VALUES " + ", ".join(
        [one] * n_rows
    )


def _sqlite_params(row: Sequence[Any], features: Any) -> tuple[Any, ...]:
    """One row's parameters: the JSON columns as JSON text (`features` given apart)."""
    dumps = jsonio.dumps_text
    scores = row[9] if len(row) == len(_ROW_COLUMNS) else None
    return (*row[:_FEATURES], dumps(features), dumps(row[7]), row[8], dumps(scores))


def _unstaged_rows(block_id: int, names_text: str | None, rows_text: str) -> list[Any]:
    """A staged block's rows as `LogRow` lists with their features as objects."""
    try:
        rows = _staged_rows(rows_text)
        if names_text is not None:
            names = json.loads(names_text)
            for row in rows:
                row[_FEATURES] = dict(zip(names, row[_FEATURES], strict=True))
        elif any(not isinstance(row[_FEATURES], dict) for row in rows):
            raise ValueError("a row's features are not an object")
        return rows
    except (ValueError, TypeError, IndexError) as exc:
        raise RuntimeError(
            f"the prediction log's staged block {block_id} ({prediction_blocks_table.name}) "
            f"cannot be read back ({exc}); it was not written by driftloop"
        ) from exc


def _sqlite_insert(conn: sa.Connection, params: list[tuple[Any, ...]]) -> None:
    """Insert rows of `_sqlite_params` in as few prepared statements as their count allows."""
    at = 0
    while at < len(params):
        n = min(_SQLITE_MAX_ROWS, 1 << ((len(params) - at).bit_length() - 1))
        flat = tuple(itertools.chain.from_iterable(params[at : at + n]))
        conn.exec_driver_sql(_sqlite_values_insert(n), flat)
        at += n


# A commit's predictions are staged as one `prediction_blocks` row per set of
# feature names (plus one for rows with feature dicts): one row to insert and no index to
# maintain, instead of a `predictions` row and five index entries per record. The first
# reader after it moves them into `predictions` (`PredictionLog.catch_up`).
_STAGE_INSERT = (
    f"INSERT INTO {prediction_blocks_table.name} (n_rows, feature_names, rows) VALUES (?, ?, ?)"
)
_EXACT = "\n"
"""Leads a staged block's text written one JSON column at a time (`_rows_text`)."""
_CATCH_UP_ROWS = 4096
"""Rows one `catch_up` transaction moves at most (at least one block): it holds the log's
write lock for that long (~30-60 ms), so a serving commit waits at most about that."""
_CATCH_UP_BLOCKS = 512
_CATCH_UP_LOCK_KEY = 0x647269667443  # PostgreSQL advisory lock of `catch_up` ("driftC")


def _rows_text(rows: Sequence[Sequence[Any]]) -> str:
    """Staged rows as one JSON array of rows.

    orjson writes the whole array when it can: the same text per value as writing each
    JSON column on its own (as the `predictions` insert does). When it cannot (an integer
    beyond 64 bits, a lone surrogate: `jsonio` then falls back to json for that one
    value), each value is written on its own, as the insert would, and the text starts
    with `_EXACT` so that it is read back with json (orjson turns such integers into
    floats): a value comes out of the block exactly as it went in.
    """
    fast = jsonio.dumps_text_fast(rows)
    if fast is not None:
        return fast
    return _EXACT + "[" + ",".join("[" + ",".join(map(_dumps, row)) + "]" for row in rows) + "]"


def _staged_rows(text: str) -> list[list[Any]]:
    if text.startswith(_EXACT):
        return json.loads(text)
    return jsonio.loads(text)


_NOT_NULL = (0, 2, 3, 4, 5, 6, 8)
"""A row's NOT NULL columns: request_id, ts, model_name, model_version, role, features,
latency_ms."""
_REQUIRED = operator.itemgetter(*_NOT_NULL)


def _check_staged(feature_names: Sequence[str] | None, rows: Sequence[Any]) -> None:
    """Refuse rows `predictions` would refuse, now: a staged block is moved later, and a
    bad row must fail its own request's commit, not a reader's catch-up."""
    n = None if feature_names is None else len(feature_names)
    for row in rows:
        if not 9 <= len(row) <= len(_ROW_COLUMNS):
            raise ValueError(f"a prediction row has {len(row)} fields, not 9 or 10")
        if None in _REQUIRED(row):
            column = next(_ROW_COLUMNS[i] for i in _NOT_NULL if row[i] is None)
            raise sqlite3.IntegrityError(f"NOT NULL constraint failed: predictions.{column}")
        if n is not None and len(row[_FEATURES]) != n:
            raise ValueError(f"a row's feature values do not match the {n} feature names")


def _stage_params(feature_names: Sequence[str] | None, rows: Sequence[Any]) -> tuple[Any, ...]:
    _check_staged(feature_names, rows)
    names = None if feature_names is None else _dumps(list(feature_names))
    return (len(rows), names, _rows_text(rows))


@dataclass(frozen=True)
class RowBlock:
    """Prediction rows whose features are tuples of values in `feature_names` order.

    The service builds these without one dict per record (that was ~14 % of a serving
    worker's GIL time with 100-record bodies): the writer thread builds each record's
    features object when it writes the rows (the same JSON text a dict row gets).
    """

    feature_names: tuple[str, ...]
    rows: Sequence[LogRow]  # each row's features: a tuple of values, in that order

    def dict_rows(self) -> list[LogRow]:
        """The rows with their features as dicts (the plain `LogRow` form)."""
        names, at = self.feature_names, _FEATURES
        return [
            (*row[:at], dict(zip(names, row[at], strict=True)), *row[at + 1 :])  # type: ignore[misc]
            for row in self.rows
        ]


@dataclass(frozen=True)
class FeedbackRecord:
    """A ground-truth label for an earlier prediction, joined by request id."""

    request_id: str
    model_name: str
    label: Any
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class LabelReceipt:
    """What became of posted labels (request ids, in the order posted)."""

    stored: list[str]  # first labels: they count
    already_labelled: list[str]  # later labels: kept in label_history, ignored
    unknown: list[str]  # no prediction of this model with that id: not stored


def _known_ids(conn: sa.Connection, model_name: str, request_ids: Sequence[str]) -> set[str]:
    """Which of these ids this log holds a prediction of `model_name` for."""
    c = predictions_table.c
    wanted = list(dict.fromkeys(request_ids))
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        query = sa.select(c.request_id).where(
            c.request_id.in_(wanted[i : i + 500]), c.model_name == model_name
        )
        found.update(conn.execute(query).scalars())
    return found


def _insert_labels(conn: sa.Connection, labels: Sequence[FeedbackRecord]) -> list[bool]:
    """The first label per (model, request id) into `feedback`, later ones into
    `label_history`; per label, whether it was the first (it counts)."""
    f = feedback_table.c
    labelled: set[tuple[str, str]] = set()
    wanted = list(dict.fromkeys(label.request_id for label in labels))
    for i in range(0, len(wanted), 500):
        query = sa.select(f.model_name, f.request_id).where(f.request_id.in_(wanted[i : i + 500]))
        labelled.update((m, r) for m, r in conn.execute(query))
    first: list[bool] = []
    for label in labels:
        key = (label.model_name, label.request_id)
        first.append(key not in labelled)
        labelled.add(key)
    counted = [label for label, ok in zip(labels, first, strict=True) if ok]
    later = [label for label, ok in zip(labels, first, strict=True) if not ok]
    if counted:
        conn.execute(
            feedback_table.insert(),
            [
                {
                    "request_id": x.request_id,
                    "ts": x.ts,
                    "model_name": x.model_name,
                    "label": x.label,
                }
                for x in counted
            ],
        )
    if later:
        conn.execute(
            label_history_table.insert(),
            [
                {
                    "request_id": x.request_id,
                    "ts": x.ts,
                    "model_name": x.model_name,
                    "label": x.label,
                    "reason": SUPERSEDED,
                }
                for x in later
            ],
        )
    return first


TimeBound = datetime | float | None


def _epoch(value: TimeBound) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    if value.tzinfo is None:
        raise ValueError(f"time bound {value!r} has no time zone; pass an aware datetime (UTC)")
    return value.timestamp()


def _dumps(value: Any) -> str:
    return jsonio.dumps_text(value)


def _switch_to_wal(cursor: Any, busy_timeout_s: float) -> None:
    """Put the database in WAL mode, waiting out other connections doing the same.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once, without its busy handler, while another connection holds one (several
    processes opening a new log together): retry until `busy_timeout_s`.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


_WAL_RESTART_PAGES = 4096
"""With background checkpoints, the WAL size (pages, ~16 MB) at which a commit still
checkpoints itself, so that the WAL starts again from its beginning (`WalCheckpointer`)."""


def _sqlite_pragmas(
    busy_timeout_s: float, background_checkpoints: bool = False
) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # How long one statement waits for another process's lock before "database is
        # locked"; the writer retries up to its commit timeout on top.
        cursor.execute(f"PRAGMA busy_timeout={max(1, round(busy_timeout_s * 1000))}")
        _switch_to_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA synchronous=FULL")  # the WAL is fsynced at every commit
        if background_checkpoints:  # `WalCheckpointer` does it, off the commit path
            cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_RESTART_PAGES}")
        cursor.close()

    return on_connect


class PredictionLog:
    """Append and query predictions and feedback in one SQL database."""

    def __init__(
        self, url: str, busy_timeout_s: float = 10.0, background_checkpoints: bool = False
    ) -> None:
        """`background_checkpoints` (SQLite; the serving process): this log's commits
        leave copying the WAL back into the database to a `WalCheckpointer` thread
        instead of doing it themselves every ~1,000 pages (see there)."""
        self.url = url
        parsed = sa.engine.make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Features may hold datetimes: store them as ISO text rather than fail.
        # hide_parameters: an error message never carries other callers' rows.
        kwargs: dict[str, Any] = {"json_serializer": _dumps, "hide_parameters": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
        self.engine = sa.create_engine(url, **kwargs)
        self.checkpointer: WalCheckpointer | None = None
        if self.is_sqlite:
            background = background_checkpoints and parsed.database not in (None, "", ":memory:")
            pragmas = _sqlite_pragmas(busy_timeout_s, background)
            sa.event.listen(self.engine, "connect", pragmas)
            if background:
                self.checkpointer = WalCheckpointer(str(Path(parsed.database).expanduser()))
        # The schema is Alembic's (predlog/migrations): a log not at the head revision
        # (new, older, or made before migrations) is upgraded here, rows kept.
        migrations.ensure_head(self.engine)
        # SQLite and PostgreSQL: staged blocks (`append`), moved by `catch_up` (SQLite:
        # multi-row VALUES statements; PostgreSQL: SQLAlchemy's executemany with the JSON
        # type); others (whose TEXT may be too short for a block): rows, row by row.
        self._stage = self.is_sqlite or parsed.get_backend_name() == "postgresql"
        self._labels_lock = threading.Lock()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.engine.dispose()

    def probe_writable(self) -> None:
        """Raise unless a write transaction can start now (SQLite: takes the write lock)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.rollback()
            else:
                conn.execute(sa.select(sa.literal(1)))

    # -- writing -----------------------------------------------------------------------
    def append(
        self,
        predictions: Sequence[PredictionRecord] = (),
        feedback: Sequence[FeedbackRecord] = (),
        rows: Sequence[LogRow] = (),
        blocks: Sequence[RowBlock] = (),
    ) -> None:
        """Write records (and prebuilt `rows`, `blocks`) in one transaction; returns once
        committed."""
        all_rows = [*map(as_row, predictions), *rows] if predictions else rows
        with self.engine.begin() as conn:
            if self._stage:
                staged = [_stage_params(None, all_rows)] if all_rows else []
                staged += [_stage_params(b.feature_names, b.rows) for b in blocks if b.rows]
                if staged and self.is_sqlite:
                    conn.exec_driver_sql(_STAGE_INSERT, staged)
                elif staged:
                    columns = ("n_rows", "feature_names", "rows")
                    conn.execute(
                        prediction_blocks_table.insert(),
                        [dict(zip(columns, p, strict=True)) for p in staged],
                    )
            else:
                if all_rows:
                    self._insert_rows(conn, all_rows)
                for block in blocks:
                    if block.rows:
                        self._insert_rows(conn, block.dict_rows())
            if feedback:
                _insert_labels(conn, feedback)
        if self.checkpointer is not None:
            written = len(all_rows) + sum(len(block.rows) for block in blocks) + len(feedback)
            self.checkpointer.nudge(written)

    def catch_up(self) -> int:
        """Move the staged predictions (`prediction_blocks`) into `predictions`, oldest
        first; returns how many rows moved.

        Every read calls it first, so a reader sees every acknowledged prediction. Each
        transaction takes a lock that readers share with nobody else (SQLite: the write
        lock, ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock, which writers never
        take), so concurrent readers move each block exactly once, in id order, and moves
        at most `_CATCH_UP_ROWS` rows (at least one block), so a serving commit never waits
        long behind it. Nothing staged: one read, no lock.
        """
        if not self._stage:
            return 0
        moved = 0
        b = prediction_blocks_table.c
        with self.engine.connect() as conn:
            while True:
                if conn.execute(sa.select(b.id).limit(1)).first() is None:
                    conn.rollback()
                    return moved
                if self.is_sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CATCH_UP_LOCK_KEY)))
                sizes = conn.execute(
                    sa.select(b.id, b.n_rows).order_by(b.id).limit(_CATCH_UP_BLOCKS)
                ).all()
                picked, total = [], 0
                for block_id, n_rows in sizes:
                    if total and total + n_rows > _CATCH_UP_ROWS:
                        break
                    picked.append(block_id)
                    total += n_rows
                if not picked:  # another reader moved them meanwhile
                    conn.rollback()
                    return moved
                staged = conn.execute(
                    sa.select(b.id, b.feature_names, b.rows).where(b.id.in_(picked)).order_by(b.id)
                )
                rows = [row for block in staged for row in _unstaged_rows(*block)]
                if self.is_sqlite:
                    _sqlite_insert(conn, [_sqlite_params(r, r[_FEATURES]) for r in rows])
                else:
                    self._insert_rows(conn, rows)
                conn.execute(sa.delete(prediction_blocks_table).where(b.id.in_(picked)))
                conn.commit()
                moved += len(rows)

    def _insert_rows(self, conn: sa.Connection, rows: Sequence[LogRow]) -> None:
        conn.execute(
            predictions_table.insert(),
            [dict(zip(_ROW_COLUMNS, _with_scores(r), strict=True)) for r in rows],
        )

    # -- reading -------------------------------------------------------------------------
    def predictions(
        self,
        start: TimeBound = None,
        end: TimeBound = None,
        model_version: str | None = None,
        roles: Iterable[str] | None = None,
        request_ids: Iterable[str] | None = None,
        limit: int | None = None,
        latest: int | None = None,
        model_name: str | None = None,
    ) -> list[PredictionRecord]:
        """Predictions with `start <= ts < end`, oldest first, optionally of one model,
        version or roles.

        `latest=N` keeps only the N most recent matching rows.
        """
        self.catch_up()
        query = sa.select(predictions_table)
        query = self._where(query, start, end, model_version, roles, request_ids, model_name)
        if latest is not None:
            newest = query.order_by(predictions_table.c.id.desc()).limit(latest).subquery()
            query = sa.select(newest).order_by(newest.c.id)
        else:
            query = query.order_by(predictions_table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            PredictionRecord(
                request_id=r["request_id"],
                model_name=r["model_name"],
                model_version=r["model_version"],
                role=r["role"],
                features=r["features"],
                prediction=r["prediction"],
                latency_ms=r["latency_ms"],
                ts=r["ts"],
                entity_id=r["entity_id"],
                scores=r["scores"],
            )
            for r in rows
        ]

    def scores(self, model_name: str, request_ids: Sequence[str]) -> pd.DataFrame:
        """The class probabilities logged with these requests' predictions of `model_name`.

        Columns request_id, model_version, role, scores (a ``{class: probability}`` dict);
        rows without scores (regressors, labels-only versions) are left out. Reads only
        the given ids, in chunks (the monitor passes its bounded window sample).
        """
        self.catch_up()
        c = predictions_table.c
        ids = list(dict.fromkeys(request_ids))
        found: list[tuple[str, str, str, dict[str, float]]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _SCORE_CHUNK_IDS):
                query = sa.select(c.request_id, c.model_version, c.role, c.scores).where(
                    c.model_name == model_name,
                    c.request_id.in_(ids[start : start + _SCORE_CHUNK_IDS]),
                )
                found += [tuple(r) for r in conn.execute(query) if isinstance(r[3], dict)]
        return pd.DataFrame(found, columns=["request_id", "model_version", "role", "scores"])

    def feedback(
        self, start: TimeBound = None, end: TimeBound = None, model_name: str | None = None
    ) -> list[FeedbackRecord]:
        query = sa.select(feedback_table).order_by(feedback_table.c.id)
        if (lo := _epoch(start)) is not None:
            query = query.where(feedback_table.c.ts >= lo)
        if (hi := _epoch(end)) is not None:
            query = query.where(feedback_table.c.ts < hi)
        if model_name is not None:
            query = query.where(feedback_table.c.model_name == model_name)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [FeedbackRecord(r["request_id"], r["model_name"], r["label"], r["ts"]) for r in rows]

    def store_labels(self, model_name: str, labels: Sequence[FeedbackRecord]) -> LabelReceipt:
        """Store posted labels of `model_name` by the label policy; returns what happened.

        Only labels for request ids this log holds a prediction of `model_name` for are
        stored (others are listed as unknown and dropped). The first label of a
        prediction counts; later ones go to `label_history`, which nothing reads back.
        One transaction, serialised within the process.
        """
        wrong = sorted({f.model_name for f in labels} - {model_name})
        if wrong:
            raise ValueError(f"labels of other models {wrong} posted to {model_name!r}")
        self._catch_up_unless_known(model_name, [f.request_id for f in labels])
        with self._labels_lock:
            for attempt in range(3):
                try:
                    with self.engine.begin() as conn:
                        ids = [f.request_id for f in labels]
                        known = _known_ids(conn, model_name, ids)
                        keep = [f for f in labels if f.request_id in known]
                        first = _insert_labels(conn, keep)
                    break
                except sa.exc.OperationalError:  # e.g. database is locked: retry
                    if attempt == 2:
                        raise
                    time.sleep(0.05 * (attempt + 1))
        return LabelReceipt(
            stored=[f.request_id for f, ok in zip(keep, first, strict=True) if ok],
            already_labelled=list(
                dict.fromkeys(f.request_id for f, ok in zip(keep, first, strict=True) if not ok)
            ),
            unknown=list(dict.fromkeys(i for i in ids if i not in known)),
        )

    def _catch_up_unless_known(self, model_name: str, request_ids: Sequence[str]) -> None:
        """`catch_up` only when some of these ids are not in `predictions` yet: labels
        mostly come after the monitor's last check moved their predictions, and then the
        serving process that takes them does not move anything."""
        if not self._stage:
            return
        with self.engine.connect() as conn:
            if len(_known_ids(conn, model_name, request_ids)) == len(set(request_ids)):
                return
        self.catch_up()

    def label_history(self) -> list[tuple[FeedbackRecord, str]]:
        """Labels that do not count (later labels), oldest first, with the reason."""
        t = label_history_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.id)).mappings().all()
        return [
            (FeedbackRecord(r["request_id"], r["model_name"], r["label"], r["ts"]), r["reason"])
            for r in rows
        ]

    def known_request_ids(
        self, request_ids: Iterable[str], model_name: str | None = None
    ) -> set[str]:
        """Which of these request ids have a logged prediction (of `model_name`, if given)."""
        self.catch_up()
        wanted = list(dict.fromkeys(request_ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                query = sa.select(predictions_table.c.request_id).where(
                    predictions_table.c.request_id.in_(chunk)
                )
                if model_name is not None:
                    query = query.where(predictions_table.c.model_name == model_name)
                found.update(conn.execute(query).scalars())
        return found

    # -- the monitor's window: bounds and exact counts by aggregate, rows by sampling ------
    def refresh_statistics(self) -> list[str]:
        """PostgreSQL: ``ANALYZE`` the log's tables that changed by more than
        `STALE_STATISTICS_SHARE` of their rows (and 1,000 rows) since their statistics were
        taken; returns the tables analyzed (nothing elsewhere: SQLite plans by its indexes).

        A log that filled quickly (a new deployment, a load test) can be read before
        autovacuum's next ANALYZE: the planner then takes the predictions and labels for
        empty and joins them with nested loops, and the window's label join, quadratic in
        the rows, ran for minutes on 26k rows (one ANALYZE: a hash join, well under a
        second). Called by the monitor's reads (`window`, `labelled_frame`); costs one
        catalog query when the statistics are fresh. Without the right to ANALYZE (not the
        tables' owner) it logs why and reads on.
        """
        if self.engine.dialect.name != "postgresql":
            return []
        names = [table.name for table in (predictions_table, feedback_table)]
        stale_sql = sa.text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.relname = ANY(:names) AND s.schemaname = ANY(current_schemas(false)) "
            "AND s.n_mod_since_analyze > GREATEST(:floor, :share * GREATEST(c.reltuples, 0))"
        )
        params = {"names": names, "floor": 1000, "share": STALE_STATISTICS_SHARE}
        analyzed = []
        with self.engine.connect() as conn:
            stale = list(conn.execute(stale_sql, params).scalars())
            conn.commit()
            for name in stale:
                try:
                    conn.exec_driver_sql(f'ANALYZE "{name}"')
                    conn.commit()
                    analyzed.append(name)
                except sa.exc.DBAPIError as exc:  # not the owner: plan with what there is
                    conn.rollback()
                    log.warning("could not ANALYZE the prediction log's %s: %s", name, exc)
        return analyzed

    def window(
        self, model_name: str, rows: int | None = None, since: TimeBound = None
    ) -> WindowBounds:
        """One model's latest `rows` requests, logged at or after `since` (either may be None).

        A request is one answered row (champion or challenger); shadow rows of the same
        requests fall inside the window's id range but never count toward `rows`. The
        window is an id range fixed now, so rows logged while a check runs are left out of
        all its queries. Costs a few index lookups plus index-only counts over the window.
        """
        if rows is not None and rows <= 0:
            raise ValueError(f"a window needs at least one row, got rows={rows}")
        self.catch_up()
        self.refresh_statistics()
        c = predictions_table.c
        lo_ts = _epoch(since)
        with self.engine.connect() as conn:
            last_id = self._max_id(conn, model_name)
            if last_id is None:
                return WindowBounds.empty_for(model_name, lo_ts)
            first_id = 0
            if lo_ts is not None:
                first = conn.execute(
                    sa.select(sa.func.min(c.id)).where(c.model_name == model_name, c.ts >= lo_ts)
                ).scalar()
                if first is None:
                    return WindowBounds.empty_for(model_name, lo_ts)
                first_id = int(first)
            counts = self._role_counts(conn, model_name, first_id, last_id)
            answered = sum(counts.get(role, 0) for role in ANSWERED_ROLES)
            if rows is not None and answered > rows:
                first_id = self._nth_newest_id(conn, model_name, counts, first_id, last_id, rows)
                counts = self._role_counts(conn, model_name, first_id, last_id)
                answered = sum(counts.get(role, 0) for role in ANSWERED_ROLES)
            if answered == 0:
                return WindowBounds.empty_for(model_name, lo_ts)
            first_id = self._min_id(conn, model_name, first_id)
            stamps = dict(
                conn.execute(sa.select(c.id, c.ts).where(c.id.in_([first_id, last_id]))).all()
            )
            start_ts, end_ts = stamps[first_id], stamps[last_id]
        return WindowBounds(
            model_name=model_name,
            first_id=first_id,
            last_id=last_id,
            requests=answered,
            rows_by_role=counts,
            since=lo_ts,
            start_ts=start_ts,
            end_ts=end_ts,
        )

    @staticmethod
    def _max_id(conn: sa.Connection, model_name: str) -> int | None:
        """The model's newest row id: one index lookup per role (min/max optimisation)."""
        c = predictions_table.c
        roles = conn.execute(sa.select(c.role).where(c.model_name == model_name).limit(1)).scalar()
        if roles is None:
            return None
        newest = [
            conn.execute(
                sa.select(sa.func.max(c.id)).where(c.model_name == model_name, c.role == role)
            ).scalar()
            for role in (*ANSWERED_ROLES, SHADOW)
        ]
        found = [int(i) for i in newest if i is not None]
        if not found:  # rows of other roles only
            return conn.execute(
                sa.select(sa.func.max(c.id)).where(c.model_name == model_name)
            ).scalar()
        return max(found)

    @staticmethod
    def _min_id(conn: sa.Connection, model_name: str, at_least: int) -> int:
        """The model's oldest row id from `at_least` on (one index lookup per role)."""
        c = predictions_table.c
        oldest = [
            conn.execute(
                sa.select(sa.func.min(c.id)).where(
                    c.model_name == model_name, c.role == role, c.id >= at_least
                )
            ).scalar()
            for role in (*ANSWERED_ROLES, SHADOW)
        ]
        return min(int(i) for i in oldest if i is not None)

    @staticmethod
    def _role_counts(
        conn: sa.Connection, model_name: str, first_id: int, last_id: int
    ) -> dict[str, int]:
        """Exact rows per role in the id range (index-only on `ix_predictions_model_role_id`)."""
        c = predictions_table.c
        counts = {}
        for role in (*ANSWERED_ROLES, SHADOW):
            n = conn.execute(
                sa.select(sa.func.count()).where(
                    c.model_name == model_name, c.role == role, c.id.between(first_id, last_id)
                )
            ).scalar_one()
            if n:
                counts[role] = int(n)
        return counts

    @staticmethod
    def _nth_newest_id(
        conn: sa.Connection,
        model_name: str,
        counts: dict[str, int],
        first_id: int,
        last_id: int,
        n: int,
    ) -> int:
        """Id of the `n`-th newest answered row in the range: index-ordered scans per role."""
        c = predictions_table.c
        roles = [role for role in ANSWERED_ROLES if counts.get(role)]
        per_role = [
            sa.select(c.id)
            .where(c.model_name == model_name, c.role == role, c.id.between(first_id, last_id))
            .order_by(c.id.desc())
            .limit(n)
            for role in roles
        ]
        if len(per_role) == 1:
            query = per_role[0].offset(n - 1).limit(1)
        else:
            newest = sa.union_all(*(q.subquery().select() for q in per_role)).subquery()
            query = sa.select(newest.c.id).order_by(newest.c.id.desc()).offset(n - 1).limit(1)
        return int(conn.execute(query).scalar_one())

    def sample(
        self,
        bounds: WindowBounds,
        max_rows: int,
        seed: int = 0,
        roles: Sequence[str] = ANSWERED_ROLES,
        block_rows: int | None = None,
    ) -> pd.DataFrame:
        """A random sample (without replacement) of at most `max_rows` of the window's
        requests, drawn by the database in blocks of consecutive rows: features as columns
        plus the meta columns (`label` left empty: labels come from `labelled`). `roles`
        narrows it to the requests some roles answered (the monitor's drift: the champion's).

        The whole window when it is small enough. Otherwise the window's id range is cut
        into k equal strata, k = ceil(max_rows / block_rows), and one block of consecutive
        ids is read from each, at a random offset (wrapping around inside its stratum, so
        every request of the window is equally likely to be read); the rows read are cut
        down to exactly `max_rows` at random. Consecutive ids sit on the same database
        pages, so the read touches about `max_rows / rows per page` pages instead of one
        page per row: a cold page cache costs a few reads per block, not one per row. The
        blocks are spread evenly over the window (stratified by time), each request is as
        likely to be picked as any other; rows of one block are neighbours in time, which
        is why there are at least `_MIN_BLOCKS` blocks (`block_rows` = None: at most
        `_BLOCK_ROWS` rows, fewer for small samples). When the model's requests are a thin
        share of the range (other models, shadow rows), their ids are read from the index
        first and the blocks are runs of consecutive requests among them.
        """
        if max_rows <= 0:
            raise ValueError(f"max_rows must be positive, got {max_rows}")
        if block_rows is not None and block_rows <= 0:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        unknown = sorted(set(roles) - set(ANSWERED_ROLES))
        if unknown:
            raise ValueError(f"a sample is of answered requests {ANSWERED_ROLES}, not {unknown}")
        requests = sum(bounds.rows_by_role.get(role, 0) for role in roles)
        if requests == 0 or bounds.first_id is None or bounds.last_id is None:
            return pd.DataFrame(columns=_META_COLUMNS)
        c = predictions_table.c
        answered = sa.and_(c.model_name == bounds.model_name, c.role.in_(list(roles)))
        if requests <= max_rows:
            query = self._frame_query(
                sa.and_(answered, c.id.between(bounds.first_id, bounds.last_id)),
                with_labels=False,
            )
            return self._read_frame(query)
        rng = np.random.default_rng(seed)
        per_block = block_rows or sample_block_rows(max_rows)
        blocks = -(-max_rows // per_block)
        span = bounds.last_id - bounds.first_id + 1
        density = requests / span
        if density < _MIN_DENSITY:
            with self.engine.connect() as conn:
                ids = np.fromiter(
                    conn.execute(
                        sa.select(c.id).where(
                            answered, c.id.between(bounds.first_id, bounds.last_id)
                        )
                    ).scalars(),
                    dtype=np.int64,
                )
            starts, ends = _stratified_blocks(len(ids), blocks, per_block, rng)
            rows = self._fetch_ranges(answered, ids[starts], ids[ends])
        else:
            # ids per block: `per_block` requests expected, over-drawn by a tenth
            length = min(span, int(per_block / density * 1.1) + 1)
            starts, ends = _stratified_blocks(span, blocks, length, rng)
            starts, ends = starts + bounds.first_id, ends + bounds.first_id
            rows = self._fetch_ranges(answered, starts, ends)
            if len(rows) < max_rows:  # fewer requests in the blocks than expected: top up
                read = np.concatenate(
                    [np.arange(a, b + 1, dtype=np.int64) for a, b in zip(starts, ends, strict=True)]
                )
                rows += self._draw(answered, bounds, max_rows - len(rows), rng, density, read)
        if len(rows) > max_rows:
            keep = rng.choice(len(rows), size=max_rows, replace=False)
            rows = [rows[i] for i in keep]
        return _rows_frame(rows)

    def _fetch_ranges(
        self, condition: sa.ColumnElement[bool], starts: np.ndarray, ends: np.ndarray
    ) -> list[Any]:
        """`_frame_query` rows (no labels, the id last) matching `condition` with an id in
        one of the ranges [starts[i], ends[i]], each read as an index range whose rows
        come by consecutive primary keys.

        SQLite takes the ranges as one JSON array parameter, joined (`json_each`): its
        planner then searches `ix_predictions_model_role_id` once per range (an OR of
        more than a few ranges made it scan the model's whole index). Other databases
        take an OR of at most `_RANGES_PER_QUERY` ranges per query (PostgreSQL: a bitmap
        OR of primary key ranges).
        """
        c = predictions_table.c
        rows: list[Any] = []
        pairs = [[int(a), int(b)] for a, b in zip(starts, ends, strict=True)]
        with self.engine.connect() as conn:
            if self.is_sqlite:
                listed = sa.func.json_each(jsonio.dumps_text(pairs)).table_valued("value")
                listed = listed.alias("blocks")
                lo = sa.func.json_extract(listed.c.value, "$[0]")
                hi = sa.func.json_extract(listed.c.value, "$[1]")
                source = listed.join(predictions_table, c.id.between(lo, hi))
                queries = [
                    self._frame_query(condition, with_labels=False, with_id=True, source=source)
                ]
            else:
                queries = [
                    self._frame_query(
                        sa.and_(
                            condition,
                            sa.or_(
                                *(c.id.between(a, b) for a, b in pairs[at : at + _RANGES_PER_QUERY])
                            ),
                        ),
                        with_labels=False,
                        with_id=True,
                    )
                    for at in range(0, len(pairs), _RANGES_PER_QUERY)
                ]
            for query in queries:
                for chunk in self._chunks(conn, query):
                    rows += chunk
        return rows

    def _draw(
        self,
        answered: sa.ColumnElement[bool],
        bounds: WindowBounds,
        n: int,
        rng: np.random.Generator,
        density: float,
        tried: np.ndarray | None = None,
    ) -> list[Any]:
        """Rows of `n` more of the window's requests drawn uniformly among the ids not
        `tried` yet: random ids of its range, the rows of those that are requests fetched,
        then cut down to `n` (fewer when the range runs out).

        Every id left is equally likely to be drawn and a request is kept whatever its
        neighbours; the over-draw makes a short draw rare, and a short draw just draws again.
        """
        assert bounds.first_id is not None and bounds.last_id is not None
        span = bounds.last_id - bounds.first_id + 1
        tried = np.empty(0, dtype=np.int64) if tried is None else np.unique(tried)
        rows: list[Any] = []
        while len(rows) < n and len(tried) < span:
            want = min(span - len(tried), int((n - len(rows)) / density * 1.1) + 64)
            draw = rng.choice(span, size=min(span, want + len(tried)), replace=False)
            fresh = np.setdiff1d(draw + bounds.first_id, tried, assume_unique=True)[:want]
            tried = np.union1d(tried, fresh)
            rows += self._fetch(answered, np.sort(fresh))
        if len(rows) > n:
            keep = rng.choice(len(rows), size=n, replace=False)
            rows = [rows[i] for i in keep]
        return rows

    def _fetch(self, condition: sa.ColumnElement[bool], ids: np.ndarray) -> list[Any]:
        """`_frame_query` rows (no labels, the id last) with these ids that match `condition`.

        SQLite takes all the ids as one JSON array parameter (`json_each`); other databases
        an expanding IN list of at most `_IDS_PER_QUERY` ids per query.
        """
        c = predictions_table.c
        rows: list[Any] = []
        step = len(ids) if self.is_sqlite else _IDS_PER_QUERY
        with self.engine.connect() as conn:
            for start in range(0, len(ids), max(step, 1)):
                part = ids[start : start + step].tolist()
                if self.is_sqlite:
                    listed = sa.func.json_each(jsonio.dumps_text(part)).table_valued("value")
                    match = c.id.in_(sa.select(listed.c.value))
                else:
                    match = c.id.in_(part)
                query = self._frame_query(
                    sa.and_(condition, match), with_labels=False, with_id=True
                )
                for chunk in self._chunks(conn, query):
                    rows += chunk
        return rows

    def labelled(self, bounds: WindowBounds, max_labels: int | None = None) -> Labelled:
        """The window's rows that have a label (all roles, shadow included): model_version,
        role, timestamp, prediction, label, scores (a classifier's ``{class: probability}``,
        else None). Narrow: no features are read.

        One row per labelled prediction, with the request's first label (`first_labels`).
        The model's labels logged since the window began are read first (a label comes
        after its prediction), then their predictions by request id, so the cost grows
        with those labels, not with the window; above `max_labels` of them only one in k is
        used, k = ceil(labels / max_labels), in blocks of consecutive labels spread evenly
        over time (`_window_labels`): counting them is an index-only scan, the lookups are
        bounded.
        """
        columns = [
            "model_version",
            "role",
            "timestamp",
            "prediction",
            "label",
            "scores",
            "label_delay_s",
        ]
        if bounds.requests == 0 or bounds.first_id is None or bounds.last_id is None:
            return Labelled(pd.DataFrame(columns=columns), 0, 1)
        with self.engine.connect() as conn:
            candidates, every, labels = _window_labels(conn, bounds, max_labels)
            label_of = {
                request_id: (label, label_ts)
                for chunk in self._chunks(
                    conn,
                    sa.select(
                        labels.c.request_id, self._json_text(labels.c.label), labels.c.label_ts
                    ),
                )
                for request_id, label, label_ts in chunk
            }
        rows = sorted(self._labelled_predictions(bounds, list(label_of)))
        versions = [r[2] for r in rows]
        roles = [r[3] for r in rows]
        ts = [r[4] for r in rows]
        preds = [_json_value(r[5]) for r in rows]
        values = [_json_value(label_of[r[1]][0]) for r in rows]
        delays = [float(label_of[r[1]][1]) - float(r[4]) for r in rows]
        scores = [None if r[6] is None else _json_value(r[6]) for r in rows]
        frame = pd.DataFrame(
            {
                "model_version": pd.Categorical(versions),
                "role": pd.Categorical(roles),
                "timestamp": pd.to_datetime(ts, unit="s", utc=True),
                "prediction": pd.Series(preds, dtype=object),
                "label": pd.Series(values, dtype=object),
                "scores": pd.Series(scores, dtype=object),
                "label_delay_s": pd.Series(delays, dtype=np.float64),
            },
            columns=columns,
        )
        return Labelled(frame, candidates, every)

    def _labelled_predictions(self, bounds: WindowBounds, request_ids: list[str]) -> list[Any]:
        """(id, request_id, model_version, role, ts, prediction, scores) of the window's rows
        (all roles) answering these requests, looked up by request id.

        Two steps, not one join: joined in SQL, SQLite scans the whole window's id range and
        probes the labels for every row (28 s at 10M rows); looked up by request id, the
        cost grows with the labels.
        """
        c = predictions_table.c
        rows: list[Any] = []
        step = len(request_ids) if self.is_sqlite else _IDS_PER_QUERY
        with self.engine.connect() as conn:
            for start in range(0, len(request_ids), max(step, 1)):
                part = request_ids[start : start + step]
                if self.is_sqlite:
                    listed = sa.func.json_each(jsonio.dumps_text(part)).table_valued("value")
                    match = c.request_id.in_(sa.select(listed.c.value))
                else:
                    match = c.request_id.in_(part)
                query = sa.select(
                    c.id,
                    c.request_id,
                    c.model_version,
                    c.role,
                    c.ts,
                    self._json_text(c.prediction),
                    self._json_text(c.scores),
                ).where(
                    c.model_name == bounds.model_name,
                    c.id.between(bounds.first_id, bounds.last_id),
                    match,
                )
                for chunk in self._chunks(conn, query):
                    rows += chunk
        return rows

    def label_figures(
        self,
        bounds: WindowBounds,
        matured_before: float | None = None,
        max_labels: int | None = None,
        labelled: Labelled | None = None,
    ) -> list[VersionLabels]:
        """Label coverage and label delay of each model version in the window: rows per
        version and role, how many of the matured ones (logged by `matured_before`; None =
        all) have a label, and the median and 90th percentile of the delay between a
        prediction and its (first) label. No feature or prediction is read.

        Bounded like `labelled`: rows per role are index-only counts of the window's id
        range (matured ones: up to the newest row logged by `matured_before`; the service
        logs in time order); the labels drive one join to their predictions by request id,
        which returns (version, role, matured?, delay) per labelled row, so the cost grows
        with the labels, not the window; above `max_labels` labels only one in k
        (`_window_labels`) is joined and the counts are scaled by k (`labels_every`). A
        role's rows are counted by version (a scan of that role) only when it holds more
        than one version in the window (a promotion inside it). Percentiles are
        nearest-rank: rank ceil(q·n).

        `labelled`: this window's `labelled(bounds, max_labels)`, when the caller read it
        already; its rows carry the same (version, role, time, delay), so the labels are
        not read a second time.
        """
        if bounds.requests == 0 or bounds.first_id is None or bounds.last_id is None:
            return []
        with self.engine.connect() as conn:
            if labelled is not None:
                every, delays = labelled.every, _delays_of(labelled, matured_before)
            else:
                every, delays = self._label_delays(conn, bounds, matured_before, max_labels)
            counted = {key: (len(found), sum(m for m, _ in found)) for key, found in delays.items()}
            rows = self._rows_by_version(conn, bounds, matured_before, counted)
        figures = []
        for version in sorted(rows, key=_version_order):
            by_role = rows[version]
            mine = [d for role in by_role for _, d in delays.get((version, role), [])]
            matured_rows = sum(m for _, m in by_role.values())
            matured_labelled = sum(counted.get((version, role), (0, 0))[1] for role in by_role)
            p50, p90 = _nearest_ranks(mine, (0.5, 0.9))
            figures.append(
                VersionLabels(
                    model_version=version,
                    rows_by_role={role: n for role, (n, _) in sorted(by_role.items())},
                    rows=sum(n for n, _ in by_role.values()),
                    matured_rows=matured_rows,
                    # scaled from a 1-in-k sample it may overshoot by a little: capped
                    labelled_rows=min(matured_labelled * every, matured_rows),
                    labels=len(mine) * every,
                    delay_p50_s=p50,
                    delay_p90_s=p90,
                    labels_every=every,
                )
            )
        return figures

    def _label_delays(
        self,
        conn: sa.Connection,
        bounds: WindowBounds,
        matured_before: float | None,
        max_labels: int | None,
    ) -> tuple[int, dict[tuple[str, str], list[tuple[int, float]]]]:
        """(k, (version, role) -> [(matured?, delay)] of its labelled rows) from one join
        of the window's (1-in-k sampled above `max_labels`) first labels to predictions."""
        c = predictions_table.c
        name = bounds.model_name
        # `id + 0`: not an index range, so SQLite drives the join from the labels through
        # the request id index instead of scanning the whole window (as `labelled` does).
        in_window = [c.model_name == name, (c.id + 0).between(bounds.first_id, bounds.last_id)]
        matured = sa.true() if matured_before is None else c.ts <= matured_before
        _, every, labels = _window_labels(conn, bounds, max_labels)
        # One pass over the (sampled) labels: version, role, matured?, delay of each
        # labelled row; at most `max_labels` × the rows a request has (shadow incl.).
        query = (
            sa.select(
                c.model_version,
                c.role,
                sa.case((matured, 1), else_=0),
                labels.c.label_ts - c.ts,
            )
            .select_from(labels.join(predictions_table, c.request_id == labels.c.request_id))
            .where(*in_window)
        )
        delays: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for chunk in self._chunks(conn, query):
            for version, role, is_matured, delay in chunk:
                delays.setdefault((str(version), str(role)), []).append(
                    (int(is_matured), float(delay))
                )
        return every, delays

    def _rows_by_version(
        self,
        conn: sa.Connection,
        bounds: WindowBounds,
        matured_before: float | None,
        labelled: dict[tuple[str, str], tuple[int, int]],
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """{version: {role: (rows, matured rows)}} of the window.

        Per role, its first and last rows' versions (two lookups): when they agree with
        each other and with every labelled row of the role, the role's exact index-only
        counts are that version's; otherwise the role's rows are counted by version.
        """
        assert bounds.first_id is not None and bounds.last_id is not None
        c = predictions_table.c
        name = bounds.model_name
        matured_counts = self._matured_counts(conn, bounds, matured_before)
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for role, n in bounds.rows_by_role.items():
            in_role = [
                c.model_name == name,
                c.role == role,
                c.id.between(bounds.first_id, bounds.last_id),
            ]
            ends = {
                conn.execute(
                    sa.select(c.model_version).where(
                        c.id == sa.select(edge(c.id)).where(*in_role).scalar_subquery()
                    )
                ).scalar()
                for edge in (sa.func.min, sa.func.max)
            }
            seen = ends | {v for v, r in labelled if r == role}
            if len(seen) == 1:
                (version,) = seen
                out.setdefault(str(version), {})[role] = (n, matured_counts.get(role, 0))
                continue
            matured = sa.true() if matured_before is None else c.ts <= matured_before
            for version, count, n_matured in conn.execute(
                sa.select(
                    c.model_version, sa.func.count(), sa.func.sum(sa.case((matured, 1), else_=0))
                )
                .where(*in_role)
                .group_by(c.model_version)
            ):
                out.setdefault(str(version), {})[role] = (int(count), int(n_matured or 0))
        return out

    def _matured_counts(
        self, conn: sa.Connection, bounds: WindowBounds, matured_before: float | None
    ) -> dict[str, int]:
        """{role: rows} of the window logged by `matured_before` (None: all of them):
        index-only counts up to the newest such row (the service logs in time order)."""
        assert bounds.first_id is not None and bounds.last_id is not None
        c = predictions_table.c
        matured_last = bounds.last_id
        if matured_before is not None:
            newest = conn.execute(
                sa.select(c.id)
                .where(c.model_name == bounds.model_name, c.ts <= matured_before)
                .order_by(c.ts.desc())
                .limit(1)
            ).scalar()
            matured_last = min(bounds.last_id, int(newest) if newest is not None else -1)
        if matured_last == bounds.last_id:  # every row matured: the window's own counts
            return dict(bounds.rows_by_role)
        if matured_last >= bounds.first_id:
            return self._role_counts(conn, bounds.model_name, bounds.first_id, matured_last)
        return {}

    def labelled_frame(self, bounds: WindowBounds) -> pd.DataFrame:
        """The window's answered requests that have a label, with their features (retraining)."""
        if bounds.requests == 0 or bounds.first_id is None or bounds.last_id is None:
            return pd.DataFrame(columns=_META_COLUMNS)
        self.refresh_statistics()
        c = predictions_table.c
        where = sa.and_(
            c.model_name == bounds.model_name,
            c.role.in_(ANSWERED_ROLES),
            c.id.between(bounds.first_id, bounds.last_id),
        )
        frame = self._read_frame(self._frame_query(where, model_name=bounds.model_name))
        return frame[frame["label"].notna()].reset_index(drop=True)

    # -- whole frames ---------------------------------------------------------------------
    def frame(
        self,
        start: TimeBound = None,
        end: TimeBound = None,
        model_version: str | None = None,
        roles: Iterable[str] | None = ANSWERED_ROLES,
        latest: int | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """One row per prediction: features as columns, `prediction`, first `label` if any.

        Extra columns: request_id, entity_id, timestamp (UTC), model_version, role,
        latency_ms. By default only answers callers got (no shadow rows). Reads every
        row: the monitor reads a window's bounds, a sample and its labels instead
        (`window`, `sample`, `labelled`).

        Built column by column from chunks of raw rows (JSON decoded once, labels joined in
        SQL), never one object per row.
        """
        self.catch_up()
        c = predictions_table.c
        window = self._where(
            sa.select(predictions_table), start, end, model_version, roles, None, model_name
        )
        with self.engine.connect() as conn:
            if latest is not None:
                # The id where the latest N rows begin: the window is then an id-ordered
                # range scan, not a sort of N wide rows.
                first = window.with_only_columns(c.id).order_by(c.id.desc())
                first_id = conn.execute(first.offset(max(latest - 1, 0)).limit(1)).scalar()
                if latest <= 0:
                    window = window.where(sa.false())
                elif first_id is not None:
                    window = window.where(c.id >= first_id)
        condition = window.whereclause if window.whereclause is not None else sa.true()
        return self._read_frame(self._frame_query(condition, model_name=model_name))

    def _frame_query(
        self,
        condition: sa.ColumnElement[bool],
        model_name: str | None = None,
        with_labels: bool = True,
        with_id: bool = False,
        source: sa.FromClause = predictions_table,
    ) -> sa.Select[Any]:
        """Rows matching `condition` with their first label (of `model_name`'s labels when
        given; none at all without `with_labels`), oldest first, as `_chunk_frame` reads them.
        `source`: where the rows come from (the table, or the table joined to what picks them).
        """
        rows = sa.select(predictions_table).select_from(source).where(condition).subquery()
        columns = [
            rows.c.request_id,
            rows.c.entity_id,
            rows.c.ts,
            rows.c.model_version,
            rows.c.role,
            rows.c.latency_ms,
            self._json_text(rows.c.features),
            self._json_text(rows.c.prediction),
        ]
        if not with_labels:
            extra = [rows.c.id] if with_id else []
            return sa.select(*columns, sa.null(), *extra).order_by(rows.c.id)
        labels = first_labels(model_name)
        return (
            sa.select(*columns, self._json_text(labels.c.label))
            .select_from(rows.outerjoin(labels, labels.c.request_id == rows.c.request_id))
            .order_by(rows.c.id)
        )

    def _read_frame(self, query: sa.Select[Any]) -> pd.DataFrame:
        parts: list[pd.DataFrame] = []
        with self.engine.connect() as conn:
            for chunk in self._chunks(conn, query):
                parts.append(_chunk_frame(chunk))
        if not parts:
            return pd.DataFrame(columns=_META_COLUMNS)
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        features = [col for col in frame.columns if col not in _META_COLUMNS]
        return frame[[*features, *_META_COLUMNS]]

    def _json_text(self, column: Any) -> Any:
        """A JSON column read as SQLite stores it (numbers as numbers, the rest as JSON text);
        elsewhere as JSON text, because drivers such as psycopg decode JSON themselves."""
        if self.is_sqlite:
            return sa.type_coerce(column, sa.String())
        return sa.cast(column, sa.Text())

    def _chunks(self, conn: sa.Connection, query: sa.Select[Any]) -> Iterator[Sequence[Any]]:
        """The query's rows as plain tuples, `_CHUNK_ROWS` at a time.

        On SQLite straight from the driver's cursor: SQLAlchemy's row objects cost more
        than everything else of a million-row read together.
        """
        if not self.is_sqlite:
            result = conn.execution_options(yield_per=_CHUNK_ROWS).execute(query)
            yield from result.partitions()
            return
        compiled = query.compile(
            dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = compiled.params
        params = [values[name] for name in compiled.positiontup or ()]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(str(compiled), params)
            while chunk := cursor.fetchmany(_CHUNK_ROWS):
                yield chunk
        finally:
            cursor.close()

    def count(self, model_name: str | None = None) -> int:
        self.catch_up()
        query = sa.select(sa.func.count()).select_from(predictions_table)
        if model_name is not None:
            query = query.where(predictions_table.c.model_name == model_name)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- retention --------------------------------------------------------------------------
    def prune(
        self,
        older_than: TimeBound,
        model_name: str | None = None,
        batch_rows: int = 10_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Delete predictions and labels logged before `older_than`; returns (predictions,
        labels) deleted (labels: those that count and the superseded ones kept in
        `label_history`).

        In transactions of at most `batch_rows` rows each, so the service's writes wait
        for one short batch at a time, never for the whole prune. `progress(predictions,
        labels)` is called after each batch with the running totals. SQLite reuses the
        freed pages; the file shrinks only with `VACUUM`.
        """
        cutoff = _epoch(older_than)
        if cutoff is None:
            raise ValueError("prune needs a time bound: older_than=None would delete everything")
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self.catch_up()
        done = [0, 0]
        tables = ((0, predictions_table), (1, feedback_table), (1, label_history_table))
        for slot, table in tables:
            where = [table.c.ts < cutoff]
            if model_name is not None:
                where.append(table.c.model_name == model_name)
            while True:
                batch = sa.select(table.c.id).where(*where).order_by(table.c.id).limit(batch_rows)
                with self.engine.begin() as conn:
                    ids = list(conn.execute(batch).scalars())
                    if ids:
                        conn.execute(sa.delete(table).where(table.c.id.in_(ids)))
                if not ids:
                    break
                done[slot] += len(ids)
                if progress is not None:
                    progress(done[0], done[1])
        return done[0], done[1]

    @staticmethod
    def _where(
        query: sa.Select[Any],
        start: TimeBound,
        end: TimeBound,
        model_version: str | None,
        roles: Iterable[str] | None,
        request_ids: Iterable[str] | None,
        model_name: str | None = None,
    ) -> sa.Select[Any]:
        c = predictions_table.c
        if (lo := _epoch(start)) is not None:
            query = query.where(c.ts >= lo)
        if (hi := _epoch(end)) is not None:
            query = query.where(c.ts < hi)
        if model_name is not None:
            query = query.where(c.model_name == model_name)
        if model_version is not None:
            query = query.where(c.model_version == str(model_version))
        if roles is not None:
            query = query.where(c.role.in_(list(roles)))
        if request_ids is not None:
            query = query.where(c.request_id.in_(list(request_ids)))
        return query


def first_labels(model_name: str | None = None, *where: sa.ColumnElement[bool]) -> sa.Subquery:
    """(request_id, label, label_ts): the first label given for each request (of
    `model_name`), among the labels matching `where`; `label_ts` is when it was logged.

    The one place that says which label counts: a later label for the same request
    does not replace it.
    """
    f = feedback_table.c
    earlier = feedback_table.alias("earlier")
    same = [earlier.c.request_id == f.request_id, earlier.c.id < f.id]
    mine = [f.model_name == model_name] if model_name is not None else []
    if model_name is not None:
        same.append(earlier.c.model_name == model_name)
    first = ~sa.exists().where(*same)
    return (
        sa.select(f.request_id, f.label, f.ts.label("label_ts"))
        .where(*mine, *where, first)
        .subquery()
    )


def _window_labels(
    conn: sa.Connection, bounds: WindowBounds, max_labels: int | None
) -> tuple[int, int, sa.Subquery]:
    """(labels of the model logged since the window began, k, their first labels, 1 in k).

    Above `max_labels` labels only one in k is used, k = ceil(labels / max_labels): by id,
    in blocks of consecutive labels (one block of b in every k·b; b = `_BLOCK_ROWS`, less
    when that would leave fewer than `_MIN_BLOCKS` blocks), so the sample is spread
    evenly over time while the labels of a block, logged together, point at predictions
    logged together: their rows share database pages instead of costing a page each.
    Counting the labels is an index-only scan.
    """
    f = feedback_table.c
    recent = [
        f.model_name == bounds.model_name,
        f.ts >= (bounds.start_ts or 0.0) - _LABEL_CLOCK_SKEW_S,
    ]
    candidates = int(conn.execute(sa.select(sa.func.count()).where(*recent)).scalar_one())
    every = 1 if not max_labels or candidates <= max_labels else -(-candidates // max_labels)
    if every > 1:
        block = sample_block_rows(max_labels or 1)
        recent.append((f.id // block) % every == 0)
    return candidates, every, first_labels(bounds.model_name, *recent)


def _delays_of(
    labelled: Labelled, matured_before: float | None
) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(version, role) -> [(matured?, delay)] of the labelled rows `labelled` already read
    (matured: logged at or before `matured_before`; None = all). Compared as arrays, not
    one Timestamp per row."""
    frame = labelled.rows
    if matured_before is None:
        matured = np.ones(len(frame), dtype=bool)
    else:
        cutoff = pd.Timestamp(matured_before, unit="s", tz="UTC")
        matured = (frame["timestamp"] <= cutoff).to_numpy(dtype=bool)
    delays: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for version, role, is_matured, delay in zip(
        frame["model_version"].astype(str).tolist(),
        frame["role"].astype(str).tolist(),
        matured.astype(int).tolist(),
        frame["label_delay_s"].astype(np.float64).tolist(),
        strict=True,
    ):
        delays.setdefault((version, role), []).append((is_matured, delay))
    return delays


def _nearest_ranks(values: list[float], quantiles: Sequence[float]) -> list[float | None]:
    """Nearest-rank quantiles: the value at rank ceil(q·n) of the n sorted values."""
    if not values:
        return [None for _ in quantiles]
    ordered = sorted(values)
    return [ordered[max(1, math.ceil(q * len(ordered))) - 1] for q in quantiles]


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


@dataclass(frozen=True)
class VersionLabels:
    """Label coverage and label delay of one model version in a window
    (`PredictionLog.label_figures`)."""

    model_version: str
    rows_by_role: dict[str, int]
    rows: int
    """The version's rows in the window (all roles: its answers and its shadow rows)."""
    matured_rows: int
    """Rows old enough to have their label (older than `label_delay_s`)."""
    labelled_rows: int
    """Matured rows with a label: coverage is labelled_rows / matured_rows."""
    labels: int
    """Every labelled row, matured or not (the delays are measured over these)."""
    delay_p50_s: float | None
    """Median seconds from a prediction to its first label; None without labels."""
    delay_p90_s: float | None
    """90th percentile of the same delays."""
    labels_every: int = 1
    """1: every label counted; k: a 1-in-k sample of the labels, counts scaled by k."""

    @property
    def coverage(self) -> float | None:
        """Share (0-1) of the matured rows that have a label; None without matured rows."""
        return self.labelled_rows / self.matured_rows if self.matured_rows else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "rows_by_role": dict(self.rows_by_role),
            "rows": self.rows,
            "matured_rows": self.matured_rows,
            "labelled_rows": self.labelled_rows,
            "labels": self.labels,
            "coverage": self.coverage,
            "delay_p50_s": self.delay_p50_s,
            "delay_p90_s": self.delay_p90_s,
            "labels_every": self.labels_every,
        }


@dataclass(frozen=True)
class Labelled:
    """A window's labelled rows (`PredictionLog.labelled`), possibly a 1-in-k sample."""

    rows: pd.DataFrame
    candidates: int
    """The model's labels logged since the window began (what was sampled from)."""
    every: int = 1
    """1: every label joined; k > 1: only labels whose id is a multiple of k."""

    @property
    def sampled(self) -> bool:
        return self.every > 1


@dataclass(frozen=True)
class WindowBounds:
    """A model's monitoring window as an id range, with exact counts from the database."""

    model_name: str
    first_id: int | None
    last_id: int | None
    requests: int
    """Answered requests (champion + challenger rows): the window's size."""
    rows_by_role: dict[str, int] = field(default_factory=dict)
    """Exact rows per role in the range, shadow rows included."""
    since: float | None = None
    start_ts: float | None = None
    end_ts: float | None = None

    @classmethod
    def empty_for(cls, model_name: str, since: float | None = None) -> WindowBounds:
        return cls(model_name, None, None, 0, {}, since)

    @property
    def shadow_rows(self) -> int:
        return self.rows_by_role.get(SHADOW, 0)


_CHUNK_ROWS = 50_000
_IDS_PER_QUERY = 10_000  # ids per expanding IN list (PostgreSQL takes 65,535 parameters)
_SCORE_CHUNK_IDS = 500  # request ids per IN (...) when reading scores
STALE_STATISTICS_SHARE = 0.2
"""PostgreSQL: rows changed since a table's last ANALYZE, as a share of its rows, beyond
which the monitor's reads refresh its statistics first (`PredictionLog.refresh_statistics`;
autovacuum's own default threshold is 0.1 plus 50 rows, on its own schedule)."""

_MIN_DENSITY = 0.2  # below this share of the id range, draw from the index's ids instead
_BLOCK_ROWS = 64  # at most this many consecutive requests per block of a window's sample
_MIN_BLOCKS = 256  # at least this many blocks per sample (smaller blocks for small samples)
_RANGES_PER_QUERY = 100  # id ranges OR-ed in one sampling query (not SQLite)
_LABEL_CLOCK_SKEW_S = 300.0  # labels logged this long before their window began still count
_META_COLUMNS = [
    "request_id",
    "entity_id",
    "timestamp",
    "model_version",
    "role",
    "latency_ms",
    "prediction",
    "label",
]
_MISSING = float("nan")


def _json_value(value: Any) -> Any:
    """A JSON column as read by `_json_text`: numbers as numbers, the rest as JSON text."""
    return jsonio.loads(value) if isinstance(value, str) else value


def _json_values(values: Sequence[Any]) -> list[Any]:
    """`_json_value` of each, parsed as one JSON array when all are text (one parser call)."""
    if all(isinstance(v, str) for v in values):
        return jsonio.loads("[" + ",".join(values) + "]")  # type: ignore[no-any-return]
    return [_json_value(v) for v in values]


def sample_block_rows(max_rows: int) -> int:
    """Rows per block of a sample of `max_rows` (`PredictionLog.sample`, the labels of
    `labelled`): at most `_BLOCK_ROWS`, and at least `_MIN_BLOCKS` blocks."""
    return max(1, min(_BLOCK_ROWS, max_rows // _MIN_BLOCKS))


def _stratified_blocks(
    span: int, blocks: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends), inclusive offsets in [0, span), of `blocks` runs of `length`
    consecutive positions: one per equal stratum of [0, span) at a uniform random offset,
    wrapping around to the stratum's start (a wrapped block is two ranges), so every
    position is equally likely to be covered. A stratum shorter than `length` is read
    whole. Sorted, never overlapping."""
    bounds = np.linspace(0, span, min(blocks, span) + 1).astype(np.int64)
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in itertools.pairwise(bounds.tolist()):
        size = hi - lo
        if size <= 0:
            continue
        if size <= length:
            starts.append(lo)
            ends.append(hi - 1)
            continue
        offset = int(rng.integers(size))
        end = offset + length - 1
        if end < size:
            starts.append(lo + offset)
            ends.append(lo + end)
        else:  # wrap: the stratum's head, then its tail
            starts += [lo, lo + offset]
            ends += [lo + end - size, hi - 1]
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _rows_frame(rows: list[Any]) -> pd.DataFrame:
    """Rows of `_by_ids` (the id last) → a frame in log order, features first."""
    if not rows:
        return pd.DataFrame(columns=_META_COLUMNS)
    rows.sort(key=lambda row: row[-1])
    frame = _chunk_frame([row[:-1] for row in rows])
    features = [col for col in frame.columns if col not in _META_COLUMNS]
    return frame[[*features, *_META_COLUMNS]]


def _chunk_frame(chunk: Sequence[Any]) -> pd.DataFrame:
    """Rows of `PredictionLog._frame_query` → the frame's columns (features first)."""
    request_ids, entity_ids, ts, versions, roles, latency, features, preds, labels = zip(
        *chunk, strict=True
    )
    frame = pd.DataFrame(_json_values(features))
    frame["request_id"] = request_ids
    frame["entity_id"] = entity_ids
    frame["timestamp"] = pd.to_datetime(list(ts), unit="s", utc=True)
    frame["model_version"] = versions
    frame["role"] = roles
    frame["latency_ms"] = latency
    frame["prediction"] = [_json_value(v) for v in preds]
    frame["label"] = [_MISSING if v is None else _json_value(v) for v in labels]
    return frame


@dataclass
class _Pending:
    predictions: Sequence[PredictionRecord]
    feedback: Sequence[FeedbackRecord]
    rows: Sequence[LogRow]
    future: concurrent.futures.Future[None]
    blocks: Sequence[RowBlock] = ()

    @property
    def size(self) -> int:
        blocked = sum(len(block.rows) for block in self.blocks) if self.blocks else 0
        return len(self.predictions) + len(self.feedback) + len(self.rows) + blocked


_STOP = object()
_TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError, OSError)
"""Errors of the log itself (locked, disk full, I/O, connection): retried, then 503."""


class LogUnavailable(RuntimeError):
    """The prediction log did not commit a request's records, so nothing may be acknowledged.

    The message names the condition (``prediction log locked: database is locked``) and
    never carries SQL text or row values: it is shown to callers.
    """


def describe_error(exc: BaseException) -> str:
    """A caller-safe description of a write error: the condition, never SQL or values."""
    if isinstance(exc, LogUnavailable):
        return str(exc)
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if not isinstance(exc, _TRANSIENT):
        # Integrity/data errors may quote values (e.g. a duplicate key): the type only.
        return f"prediction log rejected the records ({type(orig).__name__})"
    text = (str(orig).strip().splitlines() or [""])[0][:200]
    lowered = text.lower()
    condition = "locked" if "locked" in lowered or "busy" in lowered else "unwritable"
    return f"prediction log {condition}: {text or type(orig).__name__}"


class WalCheckpointer:
    """Copies a SQLite log's WAL back into the database in a thread of its own.

    By default the commit that takes the WAL past 1,000 pages does that copy (and an
    fsync of the database) itself, before its requests are answered: with 100-record
    requests (~130 kB of WAL each) one commit in ~32 does it, and the p99 of 100-row
    appends was 5.1-6.5 ms against 2.6-3.9 ms here (`python -m
    bench.serving.wal_checkpoint`). The log's connections raise ``wal_autocheckpoint`` to
    `_WAL_RESTART_PAGES` and this thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` once
    `rows_per_checkpoint` rows were committed since its last one (`nudge`; at most every
    `min_interval_s`), and after `idle_interval_s` when fewer were (not at all when none
    were: a quiet log costs no wake-ups). PASSIVE never blocks a writer or a reader, and
    the sqlite3 module releases the GIL while it copies.

    The WAL starts again from its beginning only when a commit begins with every frame
    copied back, which under steady load (a commit always in flight while this thread
    copies) never happens: so a commit still checkpoints itself once the WAL reaches
    `_WAL_RESTART_PAGES` (~16 MB; little is left to copy by then) and the WAL stays
    bounded (17 MB in the benchmark, 4 MB with SQLite's default).

    Durability is unchanged: a commit is fsynced in the WAL before it is acknowledged
    (``synchronous=FULL``); a crash before a checkpoint leaves the frames in the WAL,
    and the next connection replays them. If the thread should die, `nudge` starts a
    new one."""

    def __init__(
        self,
        path: str,
        min_interval_s: float = 0.1,
        idle_interval_s: float = 1.0,
        rows_per_checkpoint: int = 1000,
    ) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self.idle_interval_s = idle_interval_s
        self.rows_per_checkpoint = rows_per_checkpoint
        self._pending = 0  # rows committed since the last checkpoint (approximate)
        self.checkpoints = 0
        self.last_result: tuple[int, int] | None = None  # (frames in the WAL, copied back)
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="prediction-log-checkpoint", daemon=True)
        thread.start()
        return thread

    def nudge(self, rows: int = 1) -> None:
        """`rows` rows were committed: checkpoint now if enough were since the last one."""
        self._pending += rows
        if self._pending >= self.rows_per_checkpoint:
            self._wake.set()
        if not self._thread.is_alive() and not self._closed:
            with self._start_lock:
                if not self._thread.is_alive():
                    self._thread = self._new_thread()

    def close(self, timeout_s: float = 5.0) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._closed:
                woken = self._wake.wait(self.idle_interval_s)
                self._wake.clear()
                if self._closed:
                    break
                if not woken and self._pending <= 0:
                    continue
                self._pending = 0
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last_result = (frames, copied)
                    self.checkpoints += 1
                    self.last_error = None
                except sqlite3.Error as exc:  # another process's checkpoint, a lost file...
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    if conn is not None:
                        conn.close()
                        conn = None
                time.sleep(self.min_interval_s)
        finally:
            if conn is not None:
                conn.close()


class GroupCommitWriter:
    """One writer thread; each commit carries everything queued since the last one.

    `submit` returns a future that completes when the records are committed, or fails
    with `LogUnavailable` (the caller must not acknowledge). Faults never stop it:

    - a waiter that was cancelled (its caller went away) is skipped, never completed;
    - a locked or failing database is retried for up to `commit_timeout_s`, then the
      waiting requests fail and `healthy` turns False; while unhealthy the thread probes
      the database every `probe_interval_s` and turns healthy again by itself;
    - an error no retry fixes (a bad record) fails only the request that carries it;
    - the thread catches everything; should it still end, `submit`/`ensure_running`
      start a new one (`restarts` counts them).
    """

    def __init__(
        self,
        log: PredictionLog,
        max_records_per_commit: int = 5_000,
        on_commit: Callable[[int, float], None] | None = None,
        commit_timeout_s: float = 5.0,
        probe_interval_s: float = 0.5,
    ) -> None:
        self.log = log
        self.max_records_per_commit = max_records_per_commit
        self.on_commit = on_commit
        self.commit_timeout_s = commit_timeout_s
        self.probe_interval_s = probe_interval_s
        self.commits = 0
        self.failed_commits = 0
        self.restarts = 0
        self.healthy = True  # False from a failed commit until a commit or probe succeeds
        self.last_error: str | None = None
        self.unhealthy_since: float | None = None
        self.last_death: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def ensure_running(self) -> bool:
        """Start a new writer thread if the last one ended; True when one was started."""
        if self._closed or self._thread.is_alive():
            return False
        with self._start_lock:
            if self._thread.is_alive():
                return False
            log.error(
                "the prediction log writer thread had stopped (%s); starting a new one",
                self.last_death or "unknown cause",
            )
            self.restarts += 1
            self._thread = self._new_thread()
            return True

    def submit(
        self,
        predictions: Sequence[PredictionRecord] = (),
        feedback: Sequence[FeedbackRecord] = (),
        rows: Sequence[LogRow] = (),
        blocks: Sequence[RowBlock] = (),
    ) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._closed:
            future.set_exception(LogUnavailable("the prediction log is closed"))
            return future
        if not self._thread.is_alive():
            self.ensure_running()
        self._queue.put(_Pending(predictions, feedback, rows, future, blocks))
        return future

    def unavailable_reason(self) -> str | None:
        """Why commits cannot succeed right now, or None when they can."""
        if self._closed:
            return "the prediction log is closed"
        if not self._thread.is_alive():
            return f"the prediction log writer thread stopped ({self.last_death or 'unknown'})"
        if not self.healthy:
            return self.last_error or "prediction log unwritable"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "writable": self.healthy,
            "writer_alive": self._thread.is_alive(),
            "last_error": self.last_error,
            "unwritable_since": _iso_utc(self.unhealthy_since),
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "writer_restarts": self.restarts,
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # -- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._step():
                        return
                except Exception:  # never let the writer thread die
                    log.exception("prediction log writer iteration failed; continuing")
        except BaseException as exc:
            self.last_death = f"{type(exc).__name__}: {exc}"[:300]
            raise

    def _step(self) -> bool:
        """Commit one group (or probe while unhealthy); True when asked to stop."""
        try:
            first = self._queue.get(timeout=None if self.healthy else self.probe_interval_s)
        except queue.Empty:
            self._probe()
            return False
        if first is _STOP:
            return True
        group: list[_Pending] = []
        size = 0
        stop = False
        item = first
        while True:
            if _claim(item):
                group.append(item)
                size += item.size
            if size >= self.max_records_per_commit:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
        if group:
            try:
                self._commit(group, size)
            finally:  # whatever happened, no waiter is left hanging
                for pending in group:
                    _complete(pending.future, LogUnavailable("the prediction log writer failed"))
        return stop

    def _commit(self, group: list[_Pending], size: int) -> None:
        started = time.perf_counter()
        error = self._write(group)
        if error is not None and not isinstance(error, _TRANSIENT) and len(group) > 1:
            # A bad record must not fail the requests it shares a commit with.
            for pending in group:
                one = self._write([pending])
                if one is None:
                    self._committed(pending.size, time.perf_counter() - started)
                _complete(pending.future, one)
            return
        if error is None:
            self._committed(size, time.perf_counter() - started)
        for pending in group:
            _complete(pending.future, error)

    def _write(self, group: Sequence[_Pending]) -> BaseException | None:
        """Append a group, retrying log errors until `commit_timeout_s`; the error or None."""
        predictions = [p for item in group for p in item.predictions]
        feedback = [f for item in group for f in item.feedback]
        rows = [r for item in group for r in item.rows]
        blocks = _merged_blocks(group)
        deadline = time.monotonic() + self.commit_timeout_s
        backoff = 0.05
        while True:
            try:
                self.log.append(predictions, feedback, rows, blocks)
            except _TRANSIENT as exc:  # locked, I/O, disk full: retry until the deadline
                if time.monotonic() + backoff < deadline:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                return self._failed(exc, sum(item.size for item in group))
            except Exception as exc:
                log.warning("prediction log rejected a write: %s", describe_error(exc))
                return exc
            self._recovered()
            return None

    def _committed(self, size: int, elapsed: float) -> None:
        self.commits += 1
        if self.on_commit is not None:
            try:
                self.on_commit(size, elapsed)
            except Exception:  # metrics must never break logging
                log.debug("on_commit callback failed", exc_info=True)

    def _failed(self, exc: BaseException, size: int) -> BaseException:
        reason = describe_error(exc)
        self.failed_commits += 1
        if self.healthy or reason != self.last_error:
            log.error("prediction log write of %d records failed: %s", size, reason)
        if self.healthy:
            self.unhealthy_since = time.time()
        self.last_error = reason
        self.healthy = False
        return exc

    def _recovered(self) -> None:
        if not self.healthy:
            log.warning(
                "prediction log writable again (it was not since %s: %s)",
                _iso_utc(self.unhealthy_since),
                self.last_error,
            )
        self.healthy = True
        self.last_error = None
        self.unhealthy_since = None

    def _probe(self) -> None:
        try:
            self.log.probe_writable()
        except Exception as exc:
            reason = describe_error(exc)
            if reason != self.last_error:
                log.warning("prediction log still unwritable: %s", reason)
            self.last_error = reason
            return
        self._recovered()


def _merged_blocks(group: Sequence[_Pending]) -> list[RowBlock]:
    """The group's row blocks, one per set of feature names (one statement each)."""
    by_names: dict[tuple[str, ...], list[LogRow]] = {}
    for item in group:
        for block in item.blocks:
            by_names.setdefault(tuple(block.feature_names), []).extend(block.rows)
    return [RowBlock(names, rows) for names, rows in by_names.items()]


def _claim(item: _Pending) -> bool:
    """Mark a waiter running; False when its caller cancelled it (then it is skipped)."""
    try:
        return item.future.set_running_or_notify_cancel()
    except RuntimeError:  # already running or done: not ours to complete again
        return False


def _complete(future: concurrent.futures.Future[None], error: BaseException | None) -> None:
    """Complete a waiter once; a cancelled or completed one is left alone."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(None)
        else:
            wrapped = LogUnavailable(describe_error(error))
            wrapped.__cause__ = error
            future.set_exception(wrapped)
    except concurrent.futures.InvalidStateError:
        pass


def _iso_utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return pd.Timestamp(ts, unit="s", tz="UTC").isoformat(timespec="seconds")
