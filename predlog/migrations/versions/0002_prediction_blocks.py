"""Staged prediction blocks: a serving commit's rows as one row, moved into `predictions`
by the first reader after it (`PredictionLog.catch_up`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("prediction_blocks"):  # adopted with it already
        return
    op.create_table(
        "prediction_blocks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("feature_names", sa.Text, nullable=True),
        sa.Column("rows", sa.Text, nullable=False),
    )


def downgrade() -> None:
    bind = op.get_bind()
    staged = bind.execute(sa.text("SELECT count(*) FROM prediction_blocks")).scalar()
    if staged:
        raise RuntimeError(
            f"the prediction log holds {staged} staged blocks of predictions that are not in "
            '`predictions` yet: move them with this version first (`python -c "from '
            "predlog.log import PredictionLog as L; L('<log url>').catch_up()\"`, or any "
            "read of the log) before downgrading"
        )
    op.drop_table("prediction_blocks")
