"""contact revision (the newest change wins across replicas' batches), connected_at index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 01:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_contacts_connected_at", ["connected_at"], unique=False)


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_index("ix_contacts_connected_at")
        batch_op.drop_column("revision")
