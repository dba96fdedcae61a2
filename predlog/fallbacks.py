"""Fallback answers in the prediction log: what the monitor needs to roll back a failing champion.

When the champion raises or returns NaN/inf, the service answers with the loaded
``previous`` version and logs those rows with role ``fallback`` and the version that
answered (`bentos.app`). Which champion failed, and with which error, is one row of
``fallback_events`` per episode and serving process (the first fallback for a version),
so the monitor can name the error in the rollback it records.

The service never moves an alias; `fallback_counts` gives the monitor the figures
(`monitoring.policy`, ``fallback_rollback_share``) and the rollback goes through the
registry's compare-and-swap like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from config.names import CHAMPION
from predlog.log import PredictionLog
from predlog.tables import ERROR_CHARS, fallback_events_table, predictions_table

FALLBACK = "fallback"
"""Log role of a row that `previous` answered because the champion failed."""


def record_fallback_event(
    log: PredictionLog,
    model_name: str,
    failed_version: str,
    answered_by: str,
    error: str,
    ts: float | None = None,
) -> None:
    """Note that `failed_version` failed (with `error`) and `answered_by` answered for it."""
    with log.engine.begin() as conn:
        conn.execute(
            fallback_events_table.insert().values(
                ts=time.time() if ts is None else ts,
                model_name=model_name,
                failed_version=str(failed_version),
                answered_by=str(answered_by),
                error=error[:ERROR_CHARS],
            )
        )


def prune_fallback_events(
    log: PredictionLog, older_than: float, model_name: str | None = None
) -> int:
    """Delete fallback events logged before `older_than` (of `model_name`, else every
    model's); returns how many. One row per episode and serving process: one statement."""
    e = fallback_events_table.c
    where = [e.ts < older_than]
    if model_name is not None:
        where.append(e.model_name == model_name)
    with log.engine.begin() as conn:
        return int(conn.execute(sa.delete(fallback_events_table).where(*where)).rowcount or 0)


@dataclass(frozen=True)
class FallbackCounts:
    """Of the champion's newest requests: how many it answered, how many `previous` did."""

    champion_rows: int
    fallback_rows: int
    error: str | None = None
    """The newest error logged for the champion's failures (None: none was logged)."""

    @property
    def requests(self) -> int:
        return self.champion_rows + self.fallback_rows


def fallback_counts(
    log: PredictionLog,
    model_name: str,
    champion_version: str,
    answered_by: str,
    since: float | None,
    rows: int,
) -> FallbackCounts:
    """The champion's newest `rows` requests logged at or after `since`: answered by the
    champion itself, or by `answered_by` (its fallback, the ``previous`` version).

    `since` should be when the champion took the alias: fallback rows from before, when
    another version was champion, are not its failures. Index range scans only (the
    first row since `since` by time, then each role's newest ids from there), so the
    cost grows with `rows`, not with the log.
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    log.catch_up()
    c = predictions_table.c
    with log.engine.connect() as conn:
        first_id = 0
        if since is not None:
            first = conn.execute(
                sa.select(c.id)
                .where(c.model_name == model_name, c.ts >= since)
                .order_by(c.ts)
                .limit(1)
            ).scalar()
            if first is None:
                return FallbackCounts(0, 0)
            first_id = int(first)
        newest: list[tuple[int, str]] = []
        for role, version in ((CHAMPION, champion_version), (FALLBACK, answered_by)):
            ids = conn.execute(
                sa.select(c.id)
                .where(
                    c.model_name == model_name,
                    c.role == role,
                    c.id >= first_id,
                    c.model_version == str(version),
                )
                .order_by(c.id.desc())
                .limit(rows)
            ).scalars()
            newest += [(int(i), role) for i in ids]
        kept = sorted(newest, reverse=True)[:rows]
        failed = sum(1 for _, role in kept if role == FALLBACK)
        error = _latest_error(conn, model_name, champion_version, since) if failed else None
    return FallbackCounts(len(kept) - failed, failed, error)


def _latest_error(
    conn: sa.Connection, model_name: str, champion_version: str, since: float | None
) -> str | None:
    """The newest error the champion's fallback events recorded (since `since`)."""
    e = fallback_events_table.c
    latest_error = (
        sa.select(e.error)
        .where(e.model_name == model_name, e.failed_version == str(champion_version))
        .order_by(e.id.desc())
        .limit(1)
    )
    if since is not None:
        latest_error = latest_error.where(e.ts >= since)
    return conn.execute(latest_error).scalar()
