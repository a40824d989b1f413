"""erasures: the register of erased data subjects, and models flagged for retraining after one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 19:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("use_case", sa.String(63), nullable=False, index=True),
        sa.Column("subject", sa.String(64), nullable=False, index=True),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("model_versions", sa.Column("retrain_required", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("retrain_required")
    op.drop_table("erasures")
