"""The prediction log: every prediction and every feedback label, durably appended.

Storage is any SQLAlchemy URL; the default is a SQLite file in WAL mode with
``synchronous=FULL`` (each commit is fsynced). Writes go through a
`GroupCommitWriter`: one thread takes everything queued, writes it in one
transaction, and only then completes the futures the requests wait on, so a
record acknowledged to a client is on disk while the cost of a commit is shared
by all the requests of a batch.

Monitoring reads it back by time window and model version (`PredictionLog.frame`).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

log = logging.getLogger("driftloop.predlog")

_metadata = sa.MetaData()

predictions_table = sa.Table(
    "predictions",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("entity_id", sa.String(128), nullable=True),
    sa.Column("ts", sa.Double, nullable=False, index=True),  # seconds since the epoch (UTC)
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # champion | challenger | shadow
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("prediction", sa.JSON, nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Index("ix_predictions_version_ts", "model_version", "ts"),
)

feedback_table = sa.Table(
    "feedback",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("ts", sa.Double, nullable=False, index=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("label", sa.JSON, nullable=False),
)


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

    @property
    def timestamp(self) -> datetime:
        return pd.Timestamp(self.ts, unit="s", tz="UTC").to_pydatetime()


@dataclass(frozen=True)
class FeedbackRecord:
    """A ground-truth label for an earlier prediction, joined by request id."""

    request_id: str
    model_name: str
    label: Any
    ts: float = field(default_factory=time.time)


TimeBound = datetime | float | None


def _epoch(value: TimeBound) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    if value.tzinfo is None:
        raise ValueError(f"time bound {value!r} has no time zone; pass an aware datetime (UTC)")
    return value.timestamp()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # the WAL is fsynced at every commit
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class PredictionLog:
    """Append and query predictions and feedback in one SQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = sa.engine.make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Features may hold datetimes: store them as ISO text rather than fail.
        kwargs: dict[str, Any] = {"json_serializer": _dumps}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        self.engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        _metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------
    def append(
        self,
        predictions: Sequence[PredictionRecord] = (),
        feedback: Sequence[FeedbackRecord] = (),
    ) -> None:
        """Write records in one transaction; returns once it is committed."""
        with self.engine.begin() as conn:
            if predictions:
                conn.execute(
                    predictions_table.insert(),
                    [
                        {
                            "request_id": p.request_id,
                            "entity_id": p.entity_id,
                            "ts": p.ts,
                            "model_name": p.model_name,
                            "model_version": p.model_version,
                            "role": p.role,
                            "features": p.features,
                            "prediction": p.prediction,
                            "latency_ms": p.latency_ms,
                        }
                        for p in predictions
                    ],
                )
            if feedback:
                conn.execute(
                    feedback_table.insert(),
                    [
                        {
                            "request_id": f.request_id,
                            "ts": f.ts,
                            "model_name": f.model_name,
                            "label": f.label,
                        }
                        for f in feedback
                    ],
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
    ) -> list[PredictionRecord]:
        """Predictions with `start <= ts < end`, oldest first, optionally of one version/roles.

        `latest=N` keeps only the N most recent matching rows (the monitor's window).
        """
        query = sa.select(predictions_table)
        query = self._where(query, start, end, model_version, roles, request_ids)
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
            )
            for r in rows
        ]

    def feedback(self, start: TimeBound = None, end: TimeBound = None) -> list[FeedbackRecord]:
        query = sa.select(feedback_table).order_by(feedback_table.c.id)
        if (lo := _epoch(start)) is not None:
            query = query.where(feedback_table.c.ts >= lo)
        if (hi := _epoch(end)) is not None:
            query = query.where(feedback_table.c.ts < hi)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [FeedbackRecord(r["request_id"], r["model_name"], r["label"], r["ts"]) for r in rows]

    def known_request_ids(self, request_ids: Iterable[str]) -> set[str]:
        """Which of these request ids have a logged prediction."""
        wanted = list(dict.fromkeys(request_ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                query = sa.select(predictions_table.c.request_id).where(
                    predictions_table.c.request_id.in_(chunk)
                )
                found.update(conn.execute(query).scalars())
        return found

    def frame(
        self,
        start: TimeBound = None,
        end: TimeBound = None,
        model_version: str | None = None,
        roles: Iterable[str] | None = ("champion", "challenger"),
        latest: int | None = None,
    ) -> pd.DataFrame:
        """One row per prediction: features as columns, `prediction`, latest `label` if any.

        Extra columns: request_id, entity_id, timestamp (UTC), model_version, role,
        latency_ms. By default only answers callers got (no shadow rows).
        """
        records = self.predictions(start, end, model_version, roles, latest=latest)
        if not records:
            return pd.DataFrame(
                columns=[
                    "request_id",
                    "entity_id",
                    "timestamp",
                    "model_version",
                    "role",
                    "latency_ms",
                    "prediction",
                    "label",
                ]
            )
        features = pd.DataFrame([r.features for r in records])
        meta = pd.DataFrame(
            {
                "request_id": [r.request_id for r in records],
                "entity_id": [r.entity_id for r in records],
                "timestamp": pd.to_datetime([r.ts for r in records], unit="s", utc=True),
                "model_version": [r.model_version for r in records],
                "role": [r.role for r in records],
                "latency_ms": [r.latency_ms for r in records],
                "prediction": [r.prediction for r in records],
            }
        )
        labels = self._labels_for(meta["request_id"].unique().tolist())
        meta["label"] = meta["request_id"].map(labels)
        return pd.concat([features, meta], axis=1)

    def _labels_for(self, request_ids: list[str]) -> dict[str, Any]:
        """Latest label per request id."""
        labels: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(request_ids), 500):
                chunk = request_ids[i : i + 500]
                query = (
                    sa.select(feedback_table.c.request_id, feedback_table.c.label)
                    .where(feedback_table.c.request_id.in_(chunk))
                    .order_by(feedback_table.c.id)
                )
                labels.update({rid: label for rid, label in conn.execute(query)})
        return labels

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(predictions_table)).scalar_one()
            )

    @staticmethod
    def _where(
        query: sa.Select[Any],
        start: TimeBound,
        end: TimeBound,
        model_version: str | None,
        roles: Iterable[str] | None,
        request_ids: Iterable[str] | None,
    ) -> sa.Select[Any]:
        c = predictions_table.c
        if (lo := _epoch(start)) is not None:
            query = query.where(c.ts >= lo)
        if (hi := _epoch(end)) is not None:
            query = query.where(c.ts < hi)
        if model_version is not None:
            query = query.where(c.model_version == str(model_version))
        if roles is not None:
            query = query.where(c.role.in_(list(roles)))
        if request_ids is not None:
            query = query.where(c.request_id.in_(list(request_ids)))
        return query


@dataclass
class _Pending:
    predictions: Sequence[PredictionRecord]
    feedback: Sequence[FeedbackRecord]
    future: concurrent.futures.Future[None]


_STOP = object()


class GroupCommitWriter:
    """One writer thread; each commit carries everything queued since the last one.

    `submit` returns a future that completes when the records are committed (or
    fails with the database error, in which case the caller must not acknowledge).
    """

    def __init__(
        self,
        log: PredictionLog,
        max_records_per_commit: int = 5_000,
        on_commit: Callable[[int, float], None] | None = None,
        retries: int = 3,
    ) -> None:
        self.log = log
        self.max_records_per_commit = max_records_per_commit
        self.on_commit = on_commit
        self.retries = retries
        self.commits = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(
        self,
        predictions: Sequence[PredictionRecord] = (),
        feedback: Sequence[FeedbackRecord] = (),
    ) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._closed:
            future.set_exception(RuntimeError("the prediction log is closed"))
            return future
        self._queue.put(_Pending(predictions, feedback, future))
        return future

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[_Pending] = [first]
            size = len(first.predictions) + len(first.feedback)
            while size < self.max_records_per_commit:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
                size += len(item.predictions) + len(item.feedback)
            self._commit(group, size)

    def _commit(self, group: list[_Pending], size: int) -> None:
        predictions = [p for item in group for p in item.predictions]
        feedback = [f for item in group for f in item.feedback]
        error: BaseException | None = None
        started = time.perf_counter()
        for attempt in range(self.retries + 1):
            try:
                self.log.append(predictions, feedback)
                error = None
                break
            except sa.exc.OperationalError as exc:  # e.g. database is locked: retry
                error = exc
                time.sleep(0.05 * (attempt + 1))
            except Exception as exc:  # never let the writer thread die
                error = exc
                break
        elapsed = time.perf_counter() - started
        if error is None:
            self.commits += 1
            if self.on_commit is not None:
                try:
                    self.on_commit(size, elapsed)
                except Exception:  # metrics must never break logging
                    log.debug("on_commit callback failed", exc_info=True)
        else:
            log.error("prediction log write of %d records failed: %s", size, error)
        for item in group:
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(error)
