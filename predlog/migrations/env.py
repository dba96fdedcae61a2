"""Alembic environment of the prediction log: run by `predlog.migrations.upgrade` (and
``driftloop log migrate``) on a connection that already holds the write lock."""

from __future__ import annotations

from alembic import context

if context.is_offline_mode():
    raise RuntimeError(
        "the prediction log's migrations run online only: driftloop log migrate "
        "(the baseline inspects the log to adopt one made before migrations)"
    )
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the prediction log's migrations through `driftloop log migrate` "
        "(or predlog.migrations.upgrade), not the alembic command: they need the "
        "log's connection and its version table"
    )
context.configure(
    connection=connection,
    version_table=context.config.attributes["version_table"],
    target_metadata=None,
)
with context.begin_transaction():
    context.run_migrations()
