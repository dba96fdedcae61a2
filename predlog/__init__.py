"""The prediction log, a bottom layer shared by serving and the flows.

``bentos/`` writes it (every acknowledged prediction, fallbacks, trusted labels);
``pipelines/`` reads it (monitoring windows, retraining rows); the CLI migrates it.

- ``predlog.log``: ``PredictionLog`` (SQLite or PostgreSQL through SQLAlchemy), the
  durable group-commit writer and the readers.
- ``predlog.fallbacks``: the fallback events table and its counts.
- ``predlog.migrations``: the schema as Alembic migrations (`driftloop log migrate`).
- ``predlog.jsonio``: the JSON encoding of records and bodies.
"""
