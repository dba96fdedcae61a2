"""Schema migrations of the prediction log (Alembic), shipped inside the package.

The environment (`env.py`) and the revisions (`versions/`) sit beside this file, so a
non-editable ``pip install`` and a Bento carry them. `PredictionLog` calls `ensure_head`
when it opens a log: a log at the head revision costs two small reads; any other log
(new, older, or made before these migrations) is upgraded in one transaction that holds
the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so
replicas and workers that open the same log at once upgrade it exactly once.

The revision is kept in its own table, ``driftloop_predlog_version``, never in
``alembic_version``: a log that shares a database with MLflow (which migrates its own
schema with Alembic) keeps the two apart. ``driftloop log migrate`` runs the same
upgrade by hand and shows the revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

FOLDER = Path(__file__).resolve().parent
VERSION_TABLE = "driftloop_predlog_version"
HEAD = "0002"
"""The newest revision in `versions/` (a unit test checks); a log at it is not touched."""
TABLES = ("predictions", "feedback", "label_history", "fallback_events", "prediction_blocks")
"""The log's tables (of revision HEAD)."""
_PG_LOCK_KEY = 0x647269667450  # pg_advisory_xact_lock key: "driftP", any constant will do


@dataclass(frozen=True)
class Migration:
    """What an upgrade did: the revision before (None: none recorded) and after."""

    before: str | None
    after: str
    adopted: bool = False
    """The log existed without a recorded revision (made before these migrations)."""

    @property
    def changed(self) -> bool:
        return self.before != self.after


def current_revision(engine: sa.Engine) -> str | None:
    """The log's recorded revision; None for a new log or one made before migrations."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise RuntimeError(
            f"the prediction log records {len(rows)} schema revisions ({', '.join(rows)}) in "
            f"{VERSION_TABLE}; it should hold one row: delete the wrong ones"
        )
    return rows[0] if rows else None


def ensure_head(engine: sa.Engine) -> Migration | None:
    """Upgrade the log to HEAD unless it is there already (then None, and nothing locked)."""
    if current_revision(engine) == HEAD:
        return None
    return upgrade(engine)


def upgrade(engine: sa.Engine, target: str = "head") -> Migration:
    """Run the migrations up to `target` in one transaction holding the write lock."""
    from alembic import command
    from alembic.config import Config

    backend = engine.dialect.name
    with engine.connect() as conn:
        if backend == "sqlite":
            # Take the write lock before reading the revision: a second process waits
            # here (busy_timeout), then finds the log at head and does nothing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        before = _revision(conn)
        if before is not None and before not in known_revisions():
            raise RuntimeError(
                f"the prediction log is at schema revision {before}, which this driftloop "
                f"does not know (its newest is {HEAD}): a newer driftloop migrated it; "
                "install that version here"
            )
        adopted = before is None and sa.inspect(conn).has_table("predictions")
        config = Config()
        config.set_main_option("script_location", str(FOLDER))
        config.attributes.update(connection=conn, version_table=VERSION_TABLE)
        command.upgrade(config, target)
        after = _revision(conn)
        conn.commit()
    if after is None:
        raise RuntimeError(f"the prediction log records no revision after upgrading to {target}")
    return Migration(before, after, adopted)


def known_revisions() -> set[str]:
    """Every revision in `versions/`."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(FOLDER)).walk_revisions()}


def script_heads() -> tuple[str, ...]:
    """The head revisions of `versions/` as Alembic reads them (one, unless branched)."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory(str(FOLDER)).get_heads())


def code_metadata() -> sa.MetaData:
    """The tables as the code reads and writes them (`predlog.tables`)."""
    from predlog.tables import METADATA

    metadata = sa.MetaData()  # a copy: callers (Alembic's comparison) may change theirs
    for table in METADATA.tables.values():
        table.to_metadata(metadata)
    return metadata


def schema_differences(engine: sa.Engine) -> list[Any]:
    """Where the log's schema differs from the code's tables (Alembic's autogenerate
    comparison; empty when a revision covers every change the code made)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, code_metadata()))
