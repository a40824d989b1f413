"""predictions.threshold may be empty: a regression model's answer has no decision threshold

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 01:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("threshold", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("threshold", existing_type=sa.Float(), nullable=False)
