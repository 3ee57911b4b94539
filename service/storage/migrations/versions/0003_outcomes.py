"""outcomes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 22:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "outcomes",
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("inquiry_type", sa.String(length=64), nullable=False),
        sa.Column("journey_stage", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("durable", sa.Boolean(), nullable=False),
        sa.Column("repeat_of", sa.String(length=128), nullable=True),
        sa.Column("repeated_by", sa.String(length=128), nullable=True),
        sa.Column("revenue_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("upsell", sa.Boolean(), nullable=False),
        sa.Column("cross_sell", sa.Boolean(), nullable=False),
        sa.Column("nps", sa.Integer(), nullable=True),
        sa.Column("handle_seconds", sa.Float(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("contact_created_at", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id"),
    )
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outcomes_repeat",
            ["customer_id", "inquiry_type", "contact_created_at"],
            unique=False,
        )
        batch_op.create_index("ix_outcomes_completed_at", ["completed_at"], unique=False)
        batch_op.create_index("ix_outcomes_agent", ["agent_id", "inquiry_type"], unique=False)


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_outcomes_agent")
        batch_op.drop_index("ix_outcomes_completed_at")
        batch_op.drop_index("ix_outcomes_repeat")
    op.drop_table("outcomes")
