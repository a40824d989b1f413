"""experiments: live rollouts (A/B, shadow, canary) of a challenger next to the champion

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("use_case", sa.String(63), nullable=False, index=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("challenger_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("champion_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("challenger_share", sa.Float(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        # NULL once ended: the unique constraint lets a use case hold any number of ended ones, one active.
        sa.Column("active_use_case", sa.String(63), nullable=True, unique=True),
        sa.Column("started_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(128), nullable=True),
        sa.Column("end_reason", sa.String(1024), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiments")
