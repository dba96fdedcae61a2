"""Baseline: the prediction log's schema as driftloop wrote it before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A new log gets the four tables. A log made before migrations (by `create_all`, with
columns and indexes added on open as the code grew) is adopted: missing tables, the
nullable columns added since (``predictions.scores``) and missing indexes are created,
and no row is touched. These definitions are a frozen copy: later schema changes are new
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables(metadata: sa.MetaData) -> list[sa.Table]:
    predictions = sa.Table(
        "predictions",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("entity_id", sa.String(128), nullable=True),
        sa.Column("ts", sa.Double, nullable=False, index=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("prediction", sa.JSON, nullable=True),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Index("ix_predictions_version_ts", "model_version", "ts"),
        sa.Index("ix_predictions_model_role_id", "model_name", "role", "id"),
        sa.Index("ix_predictions_model_ts", "model_name", "ts"),
    )
    feedback = sa.Table(
        "feedback",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("ts", sa.Double, nullable=False, index=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("label", sa.JSON, nullable=False),
        sa.Index("ix_feedback_model_request_id", "model_name", "request_id", "id"),
        sa.Index("ix_feedback_model_ts", "model_name", "ts"),
    )
    label_history = sa.Table(
        "label_history",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("label", sa.JSON, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
    )
    fallback_events = sa.Table(
        "fallback_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("failed_version", sa.String(32), nullable=False),
        sa.Column("answered_by", sa.String(32), nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Index("ix_fallback_events_model_version", "model_name", "failed_version", "id"),
    )
    return [predictions, feedback, label_history, fallback_events]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in _tables(sa.MetaData()):
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"the prediction log's table {table.name} has no column {column.name}, "
                    "which cannot be added to a table with rows; it was not made by driftloop"
                )
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    raise RuntimeError(
        "the baseline revision is not downgraded: that would drop the prediction log"
    )
