"""monitor_runs: each monitoring window's drift, input-quality and performance results, for trends and reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 23:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("use_case", sa.String(63), nullable=False, index=True),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("insufficient", sa.Boolean(), nullable=False),
        sa.Column("drifted", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("performance", sa.JSON(), nullable=False),
        sa.Column("report_uri", sa.String(1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_runs")
