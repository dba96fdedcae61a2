"""The prediction log's tables as the code reads and writes them.

`predlog/migrations` creates and upgrades them (tests/unit/test_predlog_migrations.py
checks the two agree); `predlog.log` and `predlog.fallbacks` read and write them.
"""

from __future__ import annotations

import sqlalchemy as sa

ERROR_CHARS = 500  # a fallback event keeps this much of the error

METADATA = sa.MetaData()

predictions_table = sa.Table(
    "predictions",
    METADATA,
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
    # A classifier's {class: probability} (null for regressors and labels-only versions);
    # added to logs created before it by the baseline migration.
    sa.Column("scores", sa.JSON, nullable=True),
    sa.Index("ix_predictions_version_ts", "model_version", "ts"),
    # The monitor's reads: a model's answered requests by id (window bounds, exact counts,
    # sampling) and by time (time windows, retention); index-only where they can be.
    sa.Index("ix_predictions_model_role_id", "model_name", "role", "id"),
    sa.Index("ix_predictions_model_ts", "model_name", "ts"),
)

feedback_table = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("ts", sa.Double, nullable=False, index=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("label", sa.JSON, nullable=False),
    sa.Index("ix_feedback_model_request_id", "model_name", "request_id", "id"),
    sa.Index("ix_feedback_model_ts", "model_name", "ts"),
)

label_history_table = sa.Table(
    "label_history",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("label", sa.JSON, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),  # superseded: a later label
)
"""Labels that do not count: later labels for a prediction already labelled (first wins).
Kept for audit; the monitor never reads them."""


fallback_events_table = sa.Table(
    "fallback_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("failed_version", sa.String(32), nullable=False),
    sa.Column("answered_by", sa.String(32), nullable=False),
    sa.Column("error", sa.String(ERROR_CHARS), nullable=False),
    sa.Index("ix_fallback_events_model_version", "model_name", "failed_version", "id"),
)
"""Created with the log's other tables by its migrations (`predlog/migrations`); logs made
before fallback events existed gain it when opened."""


prediction_blocks_table = sa.Table(
    "prediction_blocks",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("n_rows", sa.Integer, nullable=False),
    # JSON array of the rows' feature names when each row's features are a value array in
    # that order; null when each row carries its features as an object.
    sa.Column("feature_names", sa.Text, nullable=True),
    sa.Column("rows", sa.Text, nullable=False),  # JSON array of rows, `predlog.log.LogRow` order
)
"""Acknowledged predictions not yet moved into `predictions` (SQLite, PostgreSQL).

A serving commit writes its rows here as one row per set of feature names, with no index
to maintain; the first reader after it (`PredictionLog.catch_up`, called by every read)
moves them into `predictions` in commit order, in short transactions, and deletes them.
Nothing reads this table but that."""
