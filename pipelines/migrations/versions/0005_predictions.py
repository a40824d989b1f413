"""predictions: the prediction log serving writes off the request path, for monitoring and experiments

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 19:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("use_case", sa.String(63), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False, index=True),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(255), nullable=True),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("freshness", sa.JSON(), nullable=False),
    )
    op.create_index("ix_predictions_use_case_at", "predictions", ["use_case", "at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_use_case_at", table_name="predictions")
    op.drop_table("predictions")
